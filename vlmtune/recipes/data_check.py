"""Check every record and image of a dataset before training, and report problems by record.

    vlmtune data check data.json --image-folder images/ --model llava-hf/llava-1.5-7b-hf
    vlmtune data check a.json b.jsonl c.parquet --tokenizer tok/ --image-seq-len 576 --json

Every record is parsed, every image fully decoded (in parallel), and with --model (or --tokenizer)
every sample tokenized with its template: lengths count each image's expanded tokens.
Exit 0 when clean, 1 when problems were found, 2 when the check could not run.
"""

from __future__ import annotations

import json

from vlmtune.data.check import check_dataset
from vlmtune.data.options import add_tokenizer_arguments, positive_int, tokenizer_from_args

SHOW = 50  # problems listed in the human summary (all of them with --json)


def add_arguments(parser) -> None:
    parser.add_argument("data", nargs="+", metavar="DATA", help=".json, .jsonl or .parquet files (several are one dataset)")
    add_tokenizer_arguments(parser)
    parser.add_argument("--max-length", type=positive_int, default=2048, metavar="N",
                        help="longest sample in tokens, image tokens included (default 2048)")
    parser.add_argument("--overlong", choices=("skip", "truncate"), default="skip",
                        help="a sample over --max-length is reported (skip), or has whole turns dropped from the end (truncate)")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="image-decoding threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args) -> int:
    setup = tokenizer_from_args(args)
    report = check_dataset(args.data, image_folder=args.image_folder, tokenizer=setup.tokenizer,
                           template_name=setup.template_name if setup.tokenizer is not None else None,
                           image_seq_len=setup.image_seq_len, image_token=setup.image_token,
                           max_length=args.max_length, overlong=args.overlong, allow_urls=args.allow_urls,
                           workers=args.workers)
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report, args.data)
    return 1 if report["problems"] else 0


def print_summary(report: dict, data: list[str]) -> None:
    problems = report["problems"]
    bad = report["records"] - report["ok"]
    print(f"{report['records']} records in {', '.join(data)}: {report['ok']} ok, {bad} with problems")
    if problems:
        counts: dict[str, int] = {}
        for p in problems:
            counts[p["reason"]] = counts.get(p["reason"], 0) + 1
        print("problems: " + ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
        for p in problems[:SHOW]:
            rid = f" (id {p['id']})" if p["id"] is not None else ""
            print(f"  record {p['index']}{rid}: {p['reason']}: {p['detail']}")
        if len(problems) > SHOW:
            print(f"  ... and {len(problems) - SHOW} more (--json lists them all)")
    m = report["modalities"]
    print(f"modalities: {m['image']} single-image, {m['multi_image']} multi-image, {m['text']} text-only"
          + "  (" + ", ".join(f"{k} {n}" for k, n in sorted(report["kinds"].items())) + ")")
    lengths = report["lengths"]
    if lengths:
        print(f"token lengths with image tokens ({report['template']}, max_length {report['max_length']}): "
              f"min {lengths['min']}, median {lengths['median']}, p95 {lengths['p95']}, max {lengths['max']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print("no problems found" if not problems else f"{len(problems)} problems found")
