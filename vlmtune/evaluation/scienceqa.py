"""ScienceQA as LLaVA evaluates it: its question file, the original problems.json and pid_splits.json.

    items = load_scienceqa("llava_test_CQM-A.json", problems="problems.json", pid_splits="pid_splits.json",
                           image_folder="images/test")
    metrics, rows = score_scienceqa(items, {"4": "A", ...})
    print(metrics["line"])   # Total: 4241, Correct: 3010, Accuracy: 70.97%, IMG-Accuracy: 68.86%

The question file is a list of `{id, image?, conversations: [{from: human, value}, ...]}`; the prompt
is LLaVA's `model_vqa_science` with `--single-pred-prompt`: the human turn without `<image>`, the
image placeholder in front when there is an image, and the letter instruction after it (not doubled
when the file already ends with it). Answers come from `problems.json` (`answer` is the index of
the right choice). Without a question file (scoring a predictions file) the questions are the
split's problems. A missing or unparseable answer counts as wrong, as LLaVA's `FAILED`.
"""

from __future__ import annotations

import json
import os
import string

from vlmtune.data.images import resolve_image_path
from vlmtune.data.sample import IMAGE_PLACEHOLDER, RecordProblem
from vlmtune.errors import DataError
from vlmtune.evaluation.answers import choice_of
from vlmtune.evaluation.items import EvalItem, ImageRef

INSTRUCTION = "Answer with the option's letter from the given choices directly."


def _load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise DataError(f"{what} {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON (line {e.lineno}: {e.msg}).") from None


def load_problems(problems: str, pid_splits: str | None, split: str) -> tuple[dict, list[str] | None]:
    """(problems by pid, the split's pids or None when no pid_splits file is given)."""
    probs = _load_json(problems, "problems file")
    if not isinstance(probs, dict):
        raise DataError(f"problems file {problems} must map problem ids to problems (ScienceQA's problems.json).")
    for pid, p in probs.items():
        if not isinstance(p, dict) or not isinstance(p.get("choices"), list) or not isinstance(p.get("answer"), int):
            raise DataError(f"{os.path.basename(problems)} problem {pid}: needs `choices` (a list) and `answer` (an integer).")
        if len(p["choices"]) < 2:
            raise DataError(f"{os.path.basename(problems)} problem {pid}, field `choices`: {len(p['choices'])} choice(s); "
                            "a multiple-choice question needs at least two.")
        if not 0 <= p["answer"] < len(p["choices"]):
            raise DataError(f"{os.path.basename(problems)} problem {pid}, field `answer`: {p['answer']} is not an index "
                            f"into its {len(p['choices'])} choices.")
    if pid_splits is None:
        return probs, None
    splits = _load_json(pid_splits, "pid_splits file")
    if not isinstance(splits, dict) or split not in splits:
        have = ", ".join(splits) if isinstance(splits, dict) else "nothing"
        raise DataError(f"pid_splits file {pid_splits} has no split {split!r} (it has: {have}).")
    pids = [str(p) for p in splits[split]]
    unknown = [p for p in pids if p not in probs]
    if unknown:
        raise DataError(f"pid_splits {split!r} names {len(unknown)} problems that {problems} lacks (first: {unknown[0]}).")
    return probs, pids


def _options(problem: dict) -> dict[str, str]:
    return {string.ascii_uppercase[i]: str(c) for i, c in enumerate(problem["choices"])}


def _human_turn(record: dict, where: str) -> str:
    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs or not isinstance(convs[0], dict):
        raise DataError(f"{where}: missing `conversations` (LLaVA's list of {{from, value}} turns).")
    value = convs[0].get("value")
    if convs[0].get("from") not in ("human", "user") or not isinstance(value, str):
        raise DataError(f"{where}, field `conversations[0]`: expected the human turn with a `value` string.")
    return value


def load_scienceqa(data: str | None, *, problems: str, pid_splits: str | None = None, split: str = "test",
                   image_folder: str | None = None, limit: int | None = None,
                   resolve_images: bool = True) -> list[EvalItem]:
    """`resolve_images=False` (scoring a predictions file) neither needs nor checks the image files."""
    probs, pids = load_problems(problems, pid_splits, split)
    in_split = set(pids) if pids is not None else None
    items = []
    if data is None:
        if pids is None:
            raise DataError("ScienceQA without a question file (--data) needs --pid-splits to know which problems to score.")
        for pid in pids:
            p = probs[pid]
            items.append(EvalItem(id=pid, prompt="", question=str(p.get("question", "")),
                                  meta={"options": _options(p), "answer": string.ascii_uppercase[p["answer"]],
                                        "has_image": bool(p.get("image"))}))
            if limit is not None and len(items) >= limit:
                break
        return items

    records = _load_json(data, "question file")
    if not isinstance(records, list):
        raise DataError(f"question file {data} must be a JSON list (LLaVA's llava_test_CQM-A.json).")
    name = os.path.basename(data)
    seen = set()
    for n, record in enumerate(records):
        where = f"{name} record {n}"
        if not isinstance(record, dict) or "id" not in record:
            raise DataError(f"{where}: missing `id`.")
        pid = str(record["id"])
        where = f"{name} record {n} (id {pid})"
        if pid in seen:
            raise DataError(f"{where}: id {pid} appears twice.")
        seen.add(pid)
        if pid not in probs:
            raise DataError(f"{where}: problem {pid} is not in {os.path.basename(problems)}; is this the matching problems.json?")
        if in_split is not None and pid not in in_split:
            continue
        qs = _human_turn(record, where).replace(IMAGE_PLACEHOLDER, "").strip()
        images = []
        has_image = bool(record.get("image"))
        if has_image and resolve_images:
            try:
                full = resolve_image_path(str(record["image"]), image_folder)
            except RecordProblem as e:
                raise DataError(f"{where}, field `image`: {e.detail}") from None
            images.append(ImageRef(where=f"{where}, field `image` ({record['image']})", path=full))
        prompt = (IMAGE_PLACEHOLDER + "\n" + qs) if has_image else qs
        if not qs.endswith(INSTRUCTION):
            prompt += "\n" + INSTRUCTION
        p = probs[pid]
        items.append(EvalItem(id=pid, prompt=prompt, question=str(p.get("question", "")), images=images,
                              meta={"options": _options(p), "answer": string.ascii_uppercase[p["answer"]],
                                    "has_image": has_image}))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(f"question file {data} has no questions" + (f" in split {split!r}." if in_split is not None else "."))
    return items


def score_scienceqa(items: list[EvalItem], predictions: dict[str, str]) -> tuple[dict, list[dict]]:
    rows, unparseable, missing = [], [], 0
    correct = img_total = img_correct = 0
    for item in items:
        pred, letter = choice_of(item.id, predictions, item.meta["options"], unparseable)
        missing += pred is None
        ok = letter == item.meta["answer"]
        correct += ok
        if item.meta["has_image"]:
            img_total += 1
            img_correct += ok
        rows.append({"id": item.id, "prediction": pred, "extracted": letter, "answer": item.meta["answer"],
                     "correct": ok, "has_image": item.meta["has_image"]})
    total = len(items)
    acc = correct / total if total else 0.0
    img_acc = img_correct / img_total if img_total else None
    line = (f"Total: {total}, Correct: {correct}, Accuracy: {acc * 100:.2f}%, "
            f"IMG-Accuracy: {img_acc * 100:.2f}%" if img_acc is not None else
            f"Total: {total}, Correct: {correct}, Accuracy: {acc * 100:.2f}%, IMG-Accuracy: n/a (no image questions)")
    metrics = {"benchmark": "scienceqa", "total": total, "correct": correct, "accuracy": acc,
               "img_total": img_total, "img_correct": img_correct, "img_accuracy": img_acc,
               "missing": missing, "unparseable": len(unparseable), "unparseable_items": unparseable, "line": line}
    return metrics, rows
