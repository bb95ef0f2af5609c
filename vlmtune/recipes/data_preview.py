"""Show one sample rendered with its template, with the trained spans marked (coloured in a terminal).

    vlmtune data preview data.json --index 3 --template vicuna_v1
    vlmtune data preview data.json --model llava-hf/llava-1.5-7b-hf --json

With --json: {"text": the rendered training text, "supervised": [each trained span], "prompt": the
generation prompt, ...}; with a tokenizer also "input_ids", "labels" and the trained tokens decoded.
"""

from __future__ import annotations

import json
import sys

from vlmtune.data.readers import parse_record, read_records
from vlmtune.data.sample import RecordProblem
from vlmtune.data.options import add_tokenizer_arguments, positive_int, template_from_setup, tokenizer_from_args
from vlmtune.data.tokenize import IGNORE_INDEX, encode_sample, template_for
from vlmtune.errors import VlmtuneError

GREEN, RESET = "\033[1;32m", "\033[0m"


def add_arguments(parser) -> None:
    parser.add_argument("data", nargs="+", metavar="DATA", help=".json, .jsonl or .parquet file(s)")
    parser.add_argument("--index", type=int, default=0, metavar="I", help="record index in the dataset (default 0)")
    add_tokenizer_arguments(parser)
    parser.add_argument("--max-length", type=positive_int, default=2048, metavar="N", help="as in training (default 2048)")
    parser.add_argument("--overlong", choices=("skip", "truncate"), default="skip", help="as in training")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _trained_runs(tokenizer, input_ids: list[int], labels: list[int]) -> list[str]:
    runs, current = [], []
    for tok, label in zip(input_ids, labels):
        if label != IGNORE_INDEX:
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def run(args) -> int:
    records = read_records(args.data)
    if not -len(records) <= args.index < len(records):
        raise VlmtuneError(f"--index {args.index} is out of range: the data has {len(records)} records (0..{len(records) - 1}).")
    source, index, raw = records[args.index]
    setup = tokenizer_from_args(args)
    template = template_from_setup(setup)
    out: dict = {"index": index, "id": None, "source": source, "template": template.name}
    try:
        sample = parse_record(raw, index, source)
        out["id"], out["kind"], out["images"] = sample.id, sample.kind, sample.images
        used = template_for(sample, template, setup.tokenizer)
        out["template"] = used.name
        segments = used.render(sample.messages)
        out["text"] = "".join(s.text for s in segments)
        out["supervised"] = [s.text for s in segments if s.trained]
        prompt_msgs = sample.messages[:-1] if sample.messages[-1].role == "assistant" and sample.kind != "text" else None
        out["prompt"] = used.render_prompt(prompt_msgs) if prompt_msgs else None
        if setup.tokenizer is not None:
            enc = encode_sample(sample, setup.tokenizer, template, image_token=setup.image_token,
                                image_seq_len=setup.image_seq_len, max_length=args.max_length, overlong=args.overlong)
            out.update(input_ids=enc.input_ids, labels=enc.labels, num_tokens=len(enc.input_ids),
                       num_trained_tokens=sum(1 for x in enc.labels if x != IGNORE_INDEX),
                       supervised_tokens=_trained_runs(setup.tokenizer, enc.input_ids, enc.labels))
    except RecordProblem as p:
        out["problem"] = {"index": index, "id": out["id"], "reason": p.reason, "detail": p.detail}
    if args.json:
        print(json.dumps(out))
    else:
        _print_human(out, segments if "text" in out else [], color=sys.stdout.isatty())
    return 1 if "problem" in out else 0


def _print_human(out: dict, segments, color: bool) -> None:
    rid = f" (id {out['id']})" if out["id"] is not None else ""
    print(f"record {out['index']}{rid} from {out['source']}, template {out['template']}")
    if segments:
        mark = (lambda t: GREEN + t + RESET) if color else (lambda t: "[[" + t + "]]")
        legend = "trained spans in green" if color else "trained spans are marked [[like this]]"
        print(f"--- {legend} ---")
        print("".join(mark(s.text) if s.trained else s.text for s in segments))
        print("---")
    if "num_tokens" in out:
        print(f"{out['num_tokens']} tokens, {out['num_trained_tokens']} trained")
    elif "problem" not in out:
        print("note: token ids and labels need --model (or --tokenizer).")
    if "problem" in out:
        p = out["problem"]
        print(f"problem: {p['reason']}: {p['detail']}")
