"""Evaluate a model on MMBench, ScienceQA or VQA, or score answers made elsewhere.

    vlmtune eval mmbench merged/ --data MMBench_DEV_EN.tsv --out results/mmbench
    vlmtune eval mmbench BASE --adapter runs/my/final --data MMBench_TEST_CN.tsv --out results/cn
    vlmtune eval scienceqa merged/ --data scienceqa/llava_test_CQM-A.json --image-folder scienceqa/images/test --out results/sqa
    vlmtune eval vqa merged/ --data vqav2_val.jsonl --image-folder coco/val2014 --out results/vqa
    vlmtune eval mmbench --predictions MMBench_DEV_EN_model.xlsx --data MMBench_DEV_EN.tsv --out results/vlmevalkit

Writes DIR/metrics.json, DIR/predictions.jsonl (answers, appended as they are made: run the same
command again after an interruption and it carries on where it stopped), DIR/scored.jsonl (each
answer with what was extracted and whether it is right), and for an MMBench split without answers
DIR/submission.xlsx for MMBench's evaluation server.

MMBench: English or Chinese TSV, and CCBench. Scored with CircularEval (every rotation of a
question's options must be answered right; rotations missing from the file are generated) and plain
accuracy, overall, per category and per l2-category. ScienceQA: LLaVA's question file plus the
original problems.json and pid_splits.json (looked for next to --data); prints LLaVA's
"Total, Correct, Accuracy, IMG-Accuracy" line. VQA: JSONL of {image, question, answers}, VQAv2
accuracy (exact match for single-answer records).

--predictions FILE scores answers from our own runs (predictions.jsonl), LLaVA's answer files, or
VLMEvalKit's .xlsx/.tsv/.csv (columns index, prediction).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlmtune.errors import DataError, VlmtuneError
from vlmtune.evaluation.benchmarks import limit_items, load_items, score, summary
from vlmtune.evaluation.engine import check_images, generate_predictions, split_done
from vlmtune.evaluation.predictions import read_predictions_file

HELP = {
    "mmbench": "MMBench (EN/CN) or CCBench TSV: CircularEval, per-category accuracy, submission file for test splits.",
    "scienceqa": "ScienceQA with LLaVA's question file, problems.json and pid_splits.json.",
    "vqa": "VQA JSONL of {image, question, answers}: VQAv2 accuracy.",
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub.required = True
    for name, help in HELP.items():
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("model", nargs="?", metavar="MODEL",
                       help="Model folder, hub id, run folder or adapter folder (omit with --predictions).")
        p.add_argument("--data", required=name != "scienceqa",
                       help={"mmbench": "The benchmark TSV (MMBench_DEV_EN.tsv, MMBench_TEST_CN.tsv, CCBench.tsv).",
                             "scienceqa": "LLaVA's question file (llava_test_CQM-A.json); optional with --predictions.",
                             "vqa": "JSONL of {image, question, answers} (or a single `answer`)."}[name])
        p.add_argument("--out", required=True, help="Folder for metrics.json and the predictions.")
        p.add_argument("--predictions", metavar="FILE",
                       help="Score this predictions file instead of running a model (ours, LLaVA's or VLMEvalKit's).")
        p.add_argument("--adapter", help="A peft adapter folder to apply on MODEL.")
        p.add_argument("--template", help="Prompt template (default: the one the model was trained with, or its own).")
        p.add_argument("--quantization", choices=("4bit", "8bit"), help="Load the LLM quantized (bitsandbytes, GPU).")
        p.add_argument("--trust-remote-code", action="store_true", help="Run model code from the hub.")
        p.add_argument("--limit", type=_positive, help="Only the first N questions (an MMBench question with all its rotations).")
        p.add_argument("--batch-size", type=_positive, default=8, help="Questions per generation batch (default 8).")
        p.add_argument("--max-new-tokens", type=_positive, default=32, help="Answer length limit in tokens (default 32).")
        p.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily.")
        p.add_argument("--no-progress", dest="progress", action="store_false", help="No progress bar.")
        if name != "mmbench":
            p.add_argument("--image-folder", help="Folder the image paths are relative to (default: the --data file's folder).")
        if name == "mmbench":
            p.add_argument("--lang", choices=("auto", "en", "cn"), default="auto",
                           help="Instruction language; auto: cn for MMBench-CN and CCBench files (default).")
            p.add_argument("--no-circular", dest="circular", action="store_false",
                           help="Don't generate the option rotations missing from the file.")
        if name == "scienceqa":
            p.add_argument("--problems", help="ScienceQA's problems.json (default: next to --data).")
            p.add_argument("--pid-splits", help="ScienceQA's pid_splits.json (default: next to --data, if there).")
            p.add_argument("--split", default="test", help="Split in pid_splits.json to score (default test).")
        if name == "vqa":
            p.add_argument("--instruction", default=None,
                           help="Text after each question (default: LLaVA's \"Answer the question using a single word or phrase.\").")


def _beside(data: str | None, name: str) -> str | None:
    if data is None:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(data)), name)
    return path if os.path.exists(path) else None


def _model_id(args) -> str:
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    if args.adapter:
        model += " + " + os.path.abspath(args.adapter)
    return model


def _load(args, limit: int | None, resolve_images: bool = True):
    data = args.data
    image_folder = getattr(args, "image_folder", None)
    if image_folder is None and data is not None and args.benchmark != "mmbench":
        image_folder = os.path.dirname(os.path.abspath(data))
    kw = {}
    if args.benchmark == "mmbench":
        kw = {"lang": args.lang, "circular": args.circular}
    if args.benchmark == "scienceqa":
        kw = {"problems": args.problems or _beside(data, "problems.json"),
              "pid_splits": args.pid_splits or _beside(data, "pid_splits.json"), "split": args.split}
        if kw["problems"] is None and data is None:
            raise DataError("scienceqa needs --data (LLaVA's question file) or --problems with --pid-splits.")
    if args.benchmark == "vqa" and args.instruction is not None:
        kw["instruction"] = args.instruction
    return load_items(args.benchmark, data, image_folder=image_folder, limit=limit, resolve_images=resolve_images, **kw)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(args) -> int:
    bench = args.benchmark
    if args.model and args.predictions:
        raise VlmtuneError("give either MODEL (to generate answers) or --predictions FILE (to score answers), not both.")
    if not args.model and not args.predictions:
        raise VlmtuneError(f"nothing to evaluate: give MODEL, or --predictions FILE. See `vlmtune eval {bench} --help`.")
    if bench == "scienceqa" and args.model and not args.data:
        raise VlmtuneError("scienceqa with a model needs --data (LLaVA's llava_test_CQM-A.json).")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"--out {out} is a file; give a folder.")

    # 1. the questions
    if args.predictions:
        items = _load(args, None, resolve_images=False)  # scoring answers made elsewhere needs no images
        predictions = read_predictions_file(args.predictions, bench, items)
        # rotations we generated count only where the predictions answer them (VLMEvalKit's files don't)
        items = [i for i in items if not (i.meta.get("generated") and i.id not in predictions)]
        items = limit_items(items, args.limit)
        out.mkdir(parents=True, exist_ok=True)
        source = os.path.abspath(args.predictions)
    else:
        items = _load(args, args.limit)
        out.mkdir(parents=True, exist_ok=True)
        source = str(out / "predictions.jsonl")
        model = _model_id(args)
        done, todo = split_done(items, source, benchmark=bench, model=model)
        if done:
            print(f"resuming: {len(done)} of {len(items)} questions already answered in {source}", file=sys.stderr)
        check_images(todo)

        # 2. the answers
        predictions = dict(done)
        if todo:
            from vlmtune.inference import load_chat_model

            chat = load_chat_model(args.model, args.adapter, quantization=args.quantization, template=args.template,
                                   trust_remote_code=args.trust_remote_code)
            predictions.update(generate_predictions(
                chat, todo, source, benchmark=bench, model=model, batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, progress=args.progress,
                already=len(done), total=len(items)))

    # 3. the scores
    metrics, rows = score(bench, items, predictions)
    metrics.update({"data": os.path.abspath(args.data) if args.data else None, "predictions": source,
                    "model": _model_id(args) if args.model else None})
    if bench == "mmbench" and any(i.meta["answer"] is None for i in items):
        from vlmtune.evaluation.mmbench import write_submission

        try:
            metrics["submission"] = write_submission(str(out / "submission.xlsx"), items, predictions)
        except DataError as e:  # openpyxl missing: the same table as TSV
            metrics["submission"] = write_submission(str(out / "submission.tsv"), items, predictions)
            print(f"vlmtune: warning: {e} Wrote {metrics['submission']} instead.", file=sys.stderr)
    _write_jsonl(out / "scored.jsonl", rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    print(summary(bench, metrics))
    if metrics.get("unparseable"):
        print(f"{metrics['unparseable']} answers named no option (counted wrong; listed under `unparseable_items` "
              "in metrics.json)", file=sys.stderr)
    if metrics.get("missing"):
        print(f"{metrics['missing']} questions have no answer in {source} (counted wrong)", file=sys.stderr)
    print(f"wrote {out / 'metrics.json'}", file=sys.stderr)
    return 0
