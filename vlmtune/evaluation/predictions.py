"""Predictions files: ours (JSONL, appended as answers are made) and other toolkits' answers.

    done = read_own_predictions("out/predictions.jsonl", benchmark="mmbench")     # {id: record}
    append_predictions("out/predictions.jsonl", [record, ...])                     # flushed and fsynced
    preds = read_predictions_file("MMBench_DEV_EN_llava.xlsx", "mmbench", items)  # {id: text}

Accepted by `read_predictions_file`:
  - our JSONL: `{"id", "benchmark", "question", "prediction", ...}` per line;
  - LLaVA's answers JSONL: `{"question_id", "text", ...}`;
  - VLMEvalKit's .xlsx / .tsv / .csv: columns `index` and `prediction` (and usually `question`).
A file whose ids or questions don't belong to the data is refused with the first row that differs.
"""

from __future__ import annotations

import json
import os

from vlmtune.errors import DataError
from vlmtune.evaluation.items import EvalItem
from vlmtune.evaluation.tables import TABLE_SUFFIXES, cell_text, read_table


def _same_question(a: str, b: str) -> bool:
    return " ".join(str(a).split()) == " ".join(str(b).split())


def _records_of_jsonl(path: str, *, tolerate_torn_tail: bool) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            # An interrupted run can leave half a line at the very end: it is redone, not an error.
            if tolerate_torn_tail and all(not rest.strip() for rest in lines[n:]):
                break
            raise DataError(f"{path} line {n} is not valid JSON ({e.msg}).") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path} line {n}: expected a JSON object.")
        out.append((n, rec))
    return out


def repair_torn_tail(path: str) -> None:
    """End the file with a newline: a last line cut short by an interruption is removed, a whole one kept."""
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:].decode("utf-8"))
            f.write(b"\n")
        except (ValueError, UnicodeDecodeError):
            f.truncate(cut)


def read_own_predictions(path: str, *, benchmark: str, items: list[EvalItem], model: str | None = None) -> dict[str, dict]:
    """What an earlier (possibly interrupted) run in the same folder already answered: {id: record}.

    A folder holding another benchmark's, another dataset's or another model's answers is an error,
    so that a resumed run never mixes answers. A torn last line is dropped from the file (redone).
    """
    if not os.path.exists(path):
        return {}
    by_id = {i.id: i for i in items}
    done = {}
    for n, rec in _records_of_jsonl(path, tolerate_torn_tail=True):
        where = f"{path} line {n}"
        if rec.get("benchmark") != benchmark:
            raise DataError(f"{where} holds a {rec.get('benchmark')!r} prediction, not {benchmark}: "
                            "use another --out folder for this evaluation.")
        if model is not None and rec.get("model") not in (None, model):
            raise DataError(f"{where} was answered by {rec.get('model')!r}, not {model!r}: "
                            "use another --out folder (or delete it to start over).")
        item = by_id.get(str(rec.get("id")))
        if item is None:
            continue  # e.g. answered before --limit was lowered; kept in the file, not scored
        if "question" in rec and not _same_question(rec["question"], item.question):
            raise DataError(f"{where}: id {rec['id']} is the question {rec['question']!r}, but in this data it is "
                            f"{item.question!r}: these answers are for another dataset; use another --out folder.")
        done[item.id] = rec
    repair_torn_tail(path)
    return done


def append_predictions(path: str, records: list[dict]) -> None:
    """Append whole lines and force them to disk, so an interruption loses at most the batch in flight."""
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _normalize_id(value) -> str:
    return cell_text(value).strip()


def read_predictions_file(path: str, benchmark: str, items: list[EvalItem]) -> dict[str, str]:
    """{id: answer text} from a predictions file, checked against the data's ids and questions."""
    if not os.path.isfile(path):
        raise DataError(f"predictions file {path} does not exist.")
    name = os.path.basename(path)
    rows: list[tuple[str, dict]] = []  # (where, {"id", "prediction", "question"?, "benchmark"?})
    if path.lower().endswith(TABLE_SUFFIXES):
        header, table = read_table(path)
        missing = [c for c in ("index", "prediction") if c not in header]
        if missing:
            raise DataError(f"{name}: missing column{'s' if len(missing) > 1 else ''} {', '.join('`' + c + '`' for c in missing)}; "
                            "a predictions spreadsheet (VLMEvalKit's) has `index` and `prediction` columns.")
        for line, cells in table:
            rec = {"id": _normalize_id(cells["index"]), "prediction": cells["prediction"]}
            if "question" in cells:
                rec["question"] = cells["question"]
            rows.append((f"{name} row {line}", rec))
    else:
        for n, raw in _records_of_jsonl(path, tolerate_torn_tail=False):
            where = f"{name} line {n}"
            if "prediction" in raw and "id" in raw:  # ours
                rec = {"id": _normalize_id(raw["id"]), "prediction": raw["prediction"]}
                if "question" in raw:
                    rec["question"] = raw["question"]
                if "benchmark" in raw:
                    rec["benchmark"] = raw["benchmark"]
            elif "question_id" in raw and "text" in raw:  # LLaVA's answers file
                rec = {"id": _normalize_id(raw["question_id"]), "prediction": raw["text"]}
            else:
                raise DataError(f"{where}: expected {{\"id\", \"prediction\"}} (vlmtune) or {{\"question_id\", \"text\"}} "
                                f"(LLaVA), got the fields {', '.join(raw) or 'none'}.")
            rows.append((where, rec))
    if not rows:
        raise DataError(f"predictions file {path} holds no predictions.")

    by_id = {i.id: i for i in items}
    out: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    unknown = []
    for where, rec in rows:
        if rec["id"] in first_seen:
            raise DataError(f"{where}: id {rec['id']} was already answered at {first_seen[rec['id']]}; "
                            "a predictions file gives one answer per question.")
        first_seen[rec["id"]] = where
        if rec.get("benchmark") not in (None, benchmark):
            raise DataError(f"{where}: a {rec['benchmark']} prediction, but this is a {benchmark} evaluation: "
                            "the predictions file is for another dataset.")
        item = by_id.get(rec["id"])
        if item is None:
            unknown.append((where, rec["id"]))
            continue
        if rec.get("question") not in (None, "") and not _same_question(rec["question"], item.question):
            raise DataError(f"{where}: id {rec['id']} has the question {rec['question']!r}, but in the data it is "
                            f"{item.question!r}: the predictions file is for another dataset.")
        pred = rec["prediction"]
        out[item.id] = "" if pred is None else str(pred)
    if unknown and not out:
        raise DataError(f"none of the {len(rows)} ids in {name} is in the data (first: {unknown[0][1]!r} at {unknown[0][0]}): "
                        "the predictions file is for another dataset.")
    if unknown:
        raise DataError(f"{len(unknown)} of the {len(rows)} ids in {name} are not in the data (first: {unknown[0][1]!r} at "
                        f"{unknown[0][0]}): the predictions file is for another dataset, or --limit cut the data short.")
    return out
