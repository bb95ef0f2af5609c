"""MMBench (English, Chinese) and CCBench: read the TSV, build LLaVA's prompts, score with CircularEval.

    items = load_mmbench("MMBench_DEV_EN.tsv")            # missing rotations generated when answers exist
    metrics, rows = score_mmbench(items, {"241": "B", ...})
    write_submission("out/submission.xlsx", items, predictions)

TSV columns: `index`, `question`, `hint`, `A`..`D` (and `E`...), `answer` (dev only), `category`,
`l2-category`, base64 `image`. An option cell that is empty, `nan` or `none` is absent (as LLaVA's
`is_none`). An `image` cell that holds another row's index (VLMEvalKit's files do this for the
circular copies) means that row's image.

CircularEval: rows whose `index` agree modulo 1,000,000 are one question with its options rotated;
the question counts as right only when every rotation is answered right. A group with fewer
rotations than options gets the missing ones generated (options and the answer letter rotated,
`index` = group + k * 1,000,000), so a dev file without the copies is scored the same way.
Plain accuracy is over each group's first (unrotated) row alone.
"""

from __future__ import annotations

import os
import re
import string
from collections import defaultdict

from vlmtune.data.sample import IMAGE_PLACEHOLDER
from vlmtune.errors import DataError
from vlmtune.evaluation.answers import choice_of, extract_choice
from vlmtune.evaluation.items import EvalItem, ImageRef
from vlmtune.evaluation.tables import read_table, write_tsv, write_xlsx

CIRCULAR_STEP = 1_000_000
INSTRUCTION = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}
REQUIRED = ("index", "question", "A", "B", "image")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def is_none(value: str | None) -> bool:
    """LLaVA's `is_none` on text cells: blank, `nan` and `none` mean absent."""
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def build_prompt(question: str, hint: str | None, options: list[str], lang: str) -> str:
    """LLaVA's `model_vqa_mmbench` prompt (with `--single-pred-prompt`)."""
    text = question if is_none(hint) else hint + "\n" + question
    for letter, option in zip(string.ascii_uppercase, options):
        text += "\n" + letter + ". " + option
    return IMAGE_PLACEHOLDER + "\n" + text + "\n" + INSTRUCTION[lang]


def _int_index(text: str, where: str) -> int:
    try:
        value = float(text.strip())
    except ValueError:
        value = None
    if value is None or not value.is_integer() or value < 0:
        raise DataError(f"{where}, column `index`: {text!r} is not a non-negative integer.")
    return int(value)


def _row_options(cells: dict, letters: list[str], where: str) -> list[str]:
    options, gap = [], None
    for letter in letters:
        if is_none(cells.get(letter)):
            gap = gap or letter
            continue
        if gap:
            raise DataError(f"{where}, column `{letter}`: option {letter} is given but option {gap} before it is empty; "
                            "options must be consecutive from A.")
        options.append(cells[letter].strip())
    if len(options) < 2:
        empty = letters[len(options)]
        raise DataError(f"{where}, column `{empty}`: only {len(options)} option{'s' if len(options) != 1 else ''} "
                        "(a multiple-choice question needs at least two, in columns A and B).")
    return options


def detect_lang(path: str, questions: list[str]) -> str:
    """`cn` for MMBench-CN and CCBench (named so, or mostly Chinese questions), else `en`."""
    name = os.path.basename(path).upper()
    if "_CN" in name or "CCBENCH" in name:
        return "cn"
    chinese = sum(1 for q in questions if _CJK.search(q))
    return "cn" if questions and chinese * 2 > len(questions) else "en"


def _rotation(options: list[str], base: list[str]) -> int | None:
    n = len(base)
    if len(options) != n:
        return None
    for k in range(n):
        if options == base[k:] + base[:k]:
            return k
    return None


def load_mmbench(path: str, *, lang: str = "auto", circular: bool = True, limit: int | None = None) -> list[EvalItem]:
    """Read an MMBench/CCBench TSV (or xlsx) into items, in file order, generated rotations after their group.

    `limit` keeps the first N questions (groups) of the file, with all their rotations.
    """
    name = os.path.basename(path)
    header, rows = read_table(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(f"{name}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join('`' + c + '`' for c in missing)} (header: {', '.join(header)}). "
                        "An MMBench TSV has index, question, hint, A, B, C, D, answer, category, l2-category, image.")
    if not rows:
        raise DataError(f"{name} has a header but no questions.")
    letters = []
    for letter in string.ascii_uppercase:
        if letter not in header:
            break
        letters.append(letter)
    has_answer = "answer" in header

    parsed, by_index = [], {}
    for line, cells in rows:
        where = f"{name} line {line}"
        index = _int_index(cells["index"], where)
        where = f"{name} line {line} (index {index})"
        if index in by_index:
            raise DataError(f"{where}, column `index`: {index} is also on line {by_index[index]['line']}; indexes must be unique.")
        if is_none(cells["question"]):
            raise DataError(f"{where}, column `question`: empty.")
        options = _row_options(cells, letters, where)
        answer = cells.get("answer", "").strip() if has_answer else ""
        answer = None if is_none(answer) else answer.upper()
        if answer is not None and (len(answer) != 1 or answer not in string.ascii_uppercase[: len(options)]):
            raise DataError(f"{where}, column `answer`: {cells['answer']!r} is not one of the letters "
                            f"A–{string.ascii_uppercase[len(options) - 1]} of its {len(options)} options.")
        row = {"line": line, "index": index, "cells": cells, "options": options, "answer": answer, "where": where}
        parsed.append(row)
        by_index[index] = row

    if lang == "auto":
        lang = detect_lang(path, [r["cells"]["question"] for r in parsed])
    if lang not in INSTRUCTION:
        raise DataError(f"--lang must be en, cn or auto, got {lang!r}.")

    groups: dict[int, list[dict]] = defaultdict(list)
    for row in parsed:
        groups[row["index"] % CIRCULAR_STEP].append(row)
    if limit is not None:
        keep = list(groups)[:limit]
        groups = {g: groups[g] for g in keep}

    items = []
    for g, members in groups.items():
        members.sort(key=lambda r: r["index"])
        base = members[0]
        for row in members:
            row["rotation"] = _rotation(row["options"], base["options"])
        made = []
        if circular and all(r["answer"] is not None for r in members):
            present = {r["rotation"] for r in members}
            used = {r["index"] for r in members}
            n = len(base["options"])
            for k in range(1, n):
                if k in present:
                    continue
                m = 1
                while g + m * CIRCULAR_STEP in used:
                    m += 1
                used.add(g + m * CIRCULAR_STEP)
                answer_pos = string.ascii_uppercase.index(base["answer"])
                made.append({**base, "index": g + m * CIRCULAR_STEP, "rotation": k, "generated": True,
                             "options": base["options"][k:] + base["options"][:k],
                             "answer": string.ascii_uppercase[(answer_pos - k) % n],
                             "where": base["where"] + f", rotated by {k}"})
        for row in members + made:
            items.append(_item(row, g, base, by_index, name, lang))
    return items


def _image_ref(row: dict, by_index: dict, name: str) -> ImageRef:
    cell = row["cells"]["image"].strip()
    where = f"{row['where'].split(', rotated')[0]}, column `image`"
    if is_none(cell):
        raise DataError(f"{where}: empty.")
    if len(cell) <= 64:  # VLMEvalKit: a short cell names the row whose image this is
        try:
            target = by_index.get(int(float(cell)))
        except ValueError:
            target = None
        if target is None or len(target["cells"]["image"].strip()) <= 64:
            raise DataError(f"{where}: {cell!r} is neither base64 image data nor the index of a row that has an image.")
        return ImageRef(where=where + f" (the image of index {cell})", base64=target["cells"]["image"])
    return ImageRef(where=where, base64=cell)


def _item(row: dict, group: int, base: dict, by_index: dict, name: str, lang: str) -> EvalItem:
    cells = row["cells"]
    options = row["options"]
    hint = cells.get("hint")
    return EvalItem(
        id=str(row["index"]),
        prompt=build_prompt(cells["question"], hint, options, lang),
        question=cells["question"],
        images=[_image_ref(row, by_index, name)],
        meta={"index": row["index"], "group": group, "rotation": row.get("rotation"),
              "base": row["index"] == base["index"], "generated": row.get("generated", False),
              "options": dict(zip(string.ascii_uppercase, options)), "answer": row["answer"],
              "category": cells.get("category", "").strip() or None,
              "l2-category": cells.get("l2-category", "").strip() or None,
              "line": row["line"], "lang": lang, "cells": cells},
    )


def _accuracy(rights: list[bool]) -> float | None:
    return sum(rights) / len(rights) if rights else None


def score_mmbench(items: list[EvalItem], predictions: dict[str, str]) -> tuple[dict, list[dict]]:
    """(metrics, one scored row per item). Without answers (a test split) only counts are returned."""
    rows, unparseable, missing = [], [], 0
    right: dict[str, bool] = {}
    for item in items:
        pred, letter = choice_of(item.id, predictions, item.meta["options"], unparseable)
        missing += pred is None
        answer = item.meta["answer"]
        ok = answer is not None and letter == answer
        right[item.id] = ok
        rows.append({"id": item.id, "group": item.meta["group"], "rotation": item.meta["rotation"],
                     "generated": item.meta["generated"], "prediction": pred, "extracted": letter,
                     "answer": answer, "correct": ok if answer is not None else None})

    groups: dict[int, list[EvalItem]] = defaultdict(list)
    for item in items:
        groups[item.meta["group"]].append(item)
    answered = {g: m for g, m in groups.items() if all(i.meta["answer"] is not None for i in m)}
    metrics = {
        "benchmark": "mmbench",
        "questions": len(groups),
        "rows": len(items),
        "generated_rotations": sum(i.meta["generated"] for i in items),
        "has_answers": bool(answered),
        "missing": missing,
        "unparseable": len(unparseable),
        "unparseable_items": unparseable,
    }
    if not answered:
        return metrics, rows

    circ, plain = {}, {}
    for g, members in answered.items():
        circ[g] = all(right[i.id] for i in members)
        base = next(i for i in members if i.meta["base"])
        plain[g] = right[base.id]
    metrics.update({
        "scored_questions": len(answered),
        "accuracy": _accuracy(list(circ.values())),
        "circular_accuracy": _accuracy(list(circ.values())),
        "plain_accuracy": _accuracy(list(plain.values())),
        "row_accuracy": _accuracy([right[i.id] for m in answered.values() for i in m]),
    })
    for field in ("category", "l2-category"):
        buckets: dict[str, list[int]] = defaultdict(list)
        for g, members in answered.items():
            base = next(i for i in members if i.meta["base"])
            if base.meta[field]:
                buckets[base.meta[field]].append(g)
        metrics[field] = {name: {"questions": len(gs), "circular_accuracy": _accuracy([circ[g] for g in gs]),
                                 "plain_accuracy": _accuracy([plain[g] for g in gs])}
                          for name, gs in sorted(buckets.items())}
    return metrics, rows


def mmbench_summary(metrics: dict) -> str:
    if not metrics["has_answers"]:
        return (f"MMBench: {metrics['questions']} questions ({metrics['rows']} rows) answered; "
                "no answers in this split: submit the spreadsheet to the evaluation server.")
    return (f"MMBench: {metrics['scored_questions']} questions ({metrics['rows']} rows), "
            f"circular accuracy {metrics['circular_accuracy'] * 100:.2f}%, plain accuracy {metrics['plain_accuracy'] * 100:.2f}%, "
            f"unparseable {metrics['unparseable']}")


def write_submission(path: str, items: list[EvalItem], predictions: dict[str, str]) -> str:
    """The file MMBench's server takes: the TSV's own rows and columns (less `image`) plus `prediction`.

    `prediction` holds the extracted letter, or the raw answer when no letter could be extracted.
    Generated rotations are left out: the server knows only the file's rows. `.xlsx` needs openpyxl;
    `.tsv` writes the same table as text. Returns the path written.
    """
    file_items = [i for i in items if not i.meta["generated"]]
    header = [c for c in file_items[0].meta["cells"] if c != "image"] + ["prediction"]
    out = []
    for item in file_items:
        row = dict(item.meta["cells"])
        row.pop("image", None)
        row["index"] = item.meta["index"]
        pred = predictions.get(item.id)
        letter = extract_choice(pred, item.meta["options"]) if pred is not None else None
        row["prediction"] = letter or (pred or "").strip()
        out.append(row)
    if path.endswith(".xlsx"):
        write_xlsx(path, header, out)
    else:
        write_tsv(path, header, out)
    return path
