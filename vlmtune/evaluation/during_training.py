"""Evaluation during training: a benchmark slice and sample answers every `eval.every_steps` steps.

    check_eval_config(cfg.eval)                                # at setup: bad files fail before weights load
    ...
    if cfg.eval.every_steps and step % cfg.eval.every_steps == 0:      # on the main process only
        logs = evaluate_during_training(ChatModel(model, processor, template), cfg.eval, step, cfg.output_dir)
        # {"eval/mmbench_accuracy": 0.41, "eval/mmbench_plain_accuracy": 0.55, "eval/samples": [...]}

Every value is a float except `eval/samples` (a list of {step, image, question, answer}), so the
trainer can log the floats beside the loss and print the samples. Files written:
  OUT/eval/step-N/{predictions.jsonl, scored.jsonl, metrics.json}   the benchmark slice's answers and scores
  OUT/eval_samples.jsonl                                            one line per sample answer, every eval
The model is put in eval mode for the duration and given back in the mode it was in.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from vlmtune.data.sample import Message, RecordProblem
from vlmtune.errors import ConfigError
from vlmtune.evaluation.benchmarks import BENCHMARKS, load_items, score
from vlmtune.evaluation.engine import check_images, generate_predictions, split_done


@functools.lru_cache(maxsize=4)
def _items(benchmark: str, data: str, image_folder: str | None, limit: int | None, mtime: float):
    kw = {}
    if benchmark == "scienceqa":
        folder = os.path.dirname(os.path.abspath(data))
        kw = {"problems": os.path.join(folder, "problems.json")}
        splits = os.path.join(folder, "pid_splits.json")
        kw["pid_splits"] = splits if os.path.exists(splits) else None
    if image_folder is None and benchmark != "mmbench":
        image_folder = os.path.dirname(os.path.abspath(data))
    return load_items(benchmark, data, image_folder=image_folder, limit=limit, **kw)


def benchmark_items(eval_cfg) -> list:
    """The configured benchmark slice (read once per file version, then cached)."""
    if eval_cfg.benchmark not in BENCHMARKS:
        raise ConfigError(f"`eval.benchmark` must be one of {', '.join(BENCHMARKS)}, got {eval_cfg.benchmark!r}.")
    if not eval_cfg.data:
        raise ConfigError(f"`eval.benchmark: {eval_cfg.benchmark}` needs `eval.data` (the benchmark file).")
    if not os.path.isfile(eval_cfg.data):
        raise ConfigError(f"`eval.data`: {eval_cfg.data} does not exist.")
    return _items(eval_cfg.benchmark, eval_cfg.data, eval_cfg.image_folder, eval_cfg.limit, os.path.getmtime(eval_cfg.data))


def _samples(eval_cfg) -> list[tuple[str | None, str]]:
    """[(resolved image path or None, question)] from `eval.samples`."""
    from vlmtune.data.images import resolve_image_path

    raw = eval_cfg.samples or []
    if not isinstance(raw, list):
        raise ConfigError("`eval.samples` must be a list of {image, question}.")
    out = []
    for n, s in enumerate(raw):
        if isinstance(s, str):
            s = {"question": s}
        if not isinstance(s, dict) or not isinstance(s.get("question"), str) or not s["question"].strip():
            raise ConfigError(f"`eval.samples[{n}]` must be {{image, question}} with a non-empty question, got {s!r}.")
        image = s.get("image")
        if image is not None:
            try:
                image = resolve_image_path(str(image), eval_cfg.image_folder)
            except RecordProblem as e:
                raise ConfigError(f"`eval.samples[{n}].image`: {e.detail}") from None
        out.append((image, s["question"].strip()))
    return out


def check_eval_config(eval_cfg) -> None:
    """Read the benchmark file, check its images and the samples' images, so that problems show at setup."""
    if eval_cfg.benchmark:
        check_images(benchmark_items(eval_cfg))
    from vlmtune.data.images import load_image

    for n, (image, _) in enumerate(_samples(eval_cfg)):
        if image is not None:
            try:
                load_image(image)
            except RecordProblem as e:
                raise ConfigError(f"`eval.samples[{n}].image`: {e.detail}") from None


def answer_samples(chat_model, eval_cfg, step: int, out_dir) -> list[dict]:
    """Answer `eval.samples` and append them to OUT/eval_samples.jsonl."""
    from vlmtune.data.images import load_image

    samples = _samples(eval_cfg)
    if not samples:
        return []
    records = []
    for start in range(0, len(samples), max(1, eval_cfg.batch_size)):
        batch = samples[start:start + max(1, eval_cfg.batch_size)]
        images = [[load_image(img)] if img else [] for img, _ in batch]
        texts = chat_model.generate([[Message("user", q)] for _, q in batch], images,
                                    max_new_tokens=eval_cfg.max_new_tokens, temperature=0.0)
        records += [{"step": step, "image": img, "question": q, "answer": t} for (img, q), t in zip(batch, texts)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "eval_samples.jsonl", "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return records


def run_benchmark(chat_model, eval_cfg, step: int, out_dir) -> dict[str, float]:
    """The configured benchmark slice at this step: {"eval/<benchmark>_accuracy": ..., ...}."""
    bench = eval_cfg.benchmark
    items = benchmark_items(eval_cfg)
    folder = Path(out_dir) / "eval" / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    predictions_file = str(folder / "predictions.jsonl")
    done, todo = split_done(items, predictions_file, benchmark=bench)  # a resumed run re-entering this step
    done.update(generate_predictions(chat_model, todo, predictions_file, benchmark=bench,
                                     batch_size=eval_cfg.batch_size, max_new_tokens=eval_cfg.max_new_tokens,
                                     progress=False))
    metrics, rows = score(bench, items, done)
    metrics["step"] = step
    with open(folder / "scored.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    logs = {}
    for key in ("accuracy", "plain_accuracy", "img_accuracy"):
        if metrics.get(key) is not None:
            logs[f"eval/{bench}_{key}"] = float(metrics[key])
    logs[f"eval/{bench}_unparseable"] = float(metrics.get("unparseable", 0))
    return logs


def evaluate_during_training(chat_model, eval_cfg, step: int, out_dir) -> dict:
    """Run the configured benchmark slice and answer `eval.samples`; returns what to log (see module doc)."""
    model = chat_model.model
    was_training = model.training
    model.eval()
    try:
        logs: dict = {}
        if eval_cfg.benchmark:
            logs.update(run_benchmark(chat_model, eval_cfg, step, out_dir))
        if eval_cfg.samples:
            logs["eval/samples"] = answer_samples(chat_model, eval_cfg, step, out_dir)
        return logs
    finally:
        if was_training:
            model.train()
