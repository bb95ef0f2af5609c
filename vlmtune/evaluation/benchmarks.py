"""One interface over the three benchmarks, for the `vlmtune eval` recipe and evaluation during training.

    items = load_items("mmbench", "MMBench_DEV_EN.tsv", limit=50)
    metrics, rows = score("mmbench", items, {item_id: answer_text})
    print(summary("mmbench", metrics))
"""

from __future__ import annotations

from vlmtune.errors import DataError
from vlmtune.evaluation.items import EvalItem
from vlmtune.evaluation.mmbench import load_mmbench, mmbench_summary, score_mmbench
from vlmtune.evaluation.scienceqa import load_scienceqa, score_scienceqa
from vlmtune.evaluation.vqa import SHORT_ANSWER, load_vqa, score_vqa, vqa_summary

BENCHMARKS = ("mmbench", "scienceqa", "vqa")


def load_items(benchmark: str, data: str | None, *, image_folder: str | None = None, limit: int | None = None,
               lang: str = "auto", circular: bool = True, problems: str | None = None,
               pid_splits: str | None = None, split: str = "test", instruction: str = SHORT_ANSWER,
               resolve_images: bool = True) -> list[EvalItem]:
    """The benchmark's questions. `limit` keeps the first N questions (an MMBench question with all its rotations).

    `resolve_images=False`: for scoring answers made elsewhere, image files are neither needed nor checked.
    """
    if benchmark == "mmbench":
        if data is None:
            raise DataError("mmbench needs --data FILE.tsv (MMBench's or CCBench's TSV).")
        return load_mmbench(data, lang=lang, circular=circular, limit=limit)
    if benchmark == "scienceqa":
        if problems is None:
            raise DataError("scienceqa needs ScienceQA's problems.json: --problems FILE "
                            "(looked for next to --data when not given).")
        return load_scienceqa(data, problems=problems, pid_splits=pid_splits, split=split,
                              image_folder=image_folder, limit=limit, resolve_images=resolve_images)
    if benchmark == "vqa":
        if data is None:
            raise DataError("vqa needs --data FILE.jsonl of {image, question, answers}.")
        return load_vqa(data, image_folder=image_folder, instruction=instruction, limit=limit,
                        resolve_images=resolve_images)
    raise DataError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}.")


def limit_items(items: list[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first `limit` questions; rows of one MMBench group count as one question."""
    if limit is None:
        return items
    keys: set = set()
    out = []
    for item in items:
        key = item.meta.get("group", item.id)
        if key not in keys:
            if len(keys) >= limit:
                continue
            keys.add(key)
        out.append(item)
    return out


def score(benchmark: str, items: list[EvalItem], predictions: dict[str, str]) -> tuple[dict, list[dict]]:
    """(metrics, one scored row per item)."""
    if benchmark == "mmbench":
        return score_mmbench(items, predictions)
    if benchmark == "scienceqa":
        return score_scienceqa(items, predictions)
    if benchmark == "vqa":
        return score_vqa(items, predictions)
    raise DataError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}.")


def summary(benchmark: str, metrics: dict) -> str:
    if benchmark == "mmbench":
        return mmbench_summary(metrics)
    if benchmark == "scienceqa":
        return metrics["line"]
    return vqa_summary(metrics)


def headline(benchmark: str, metrics: dict) -> float | None:
    """The one number to log during training: circular accuracy, accuracy, VQA accuracy."""
    return metrics.get("accuracy")
