"""--predictions: our JSONL, LLaVA's answers, VLMEvalKit's xlsx/tsv/csv, and files for another dataset."""

import csv
import json

import pytest

from vlmtune.cli import main
from vlmtune.errors import DataError
from vlmtune.evaluation.mmbench import load_mmbench
from vlmtune.evaluation.predictions import read_predictions_file

ROWS = [
    {"index": 0, "question": "Which digit?", "A": "zero", "B": "one", "answer": "B", "category": "digits"},
    {"index": 1, "question": "Is it even?", "A": "yes", "B": "no", "answer": "A", "category": "parity"},
    {"index": 1000000, "question": "Which digit?", "A": "one", "B": "zero", "answer": "A", "category": "digits"},
]


def vlmevalkit_rows(preds):
    """VLMEvalKit's result layout: the data's columns less image, plus prediction."""
    return [{"index": r["index"], "question": r["question"], "A": r["A"], "B": r["B"], "answer": r["answer"],
             "category": r["category"], "prediction": preds[r["index"]]} for r in ROWS]


@pytest.fixture
def tsv(tmp_path, make_mmbench):
    return make_mmbench(tmp_path / "MMBench_DEV_EN.tsv", ROWS)


def write_table(path, rows):
    cols = list(rows[0])
    if path.suffix == ".xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        wb = openpyxl.Workbook()
        wb.active.append(cols)
        for r in rows:
            wb.active.append([r[c] for c in cols])
        wb.save(path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writerow(cols)
            for r in rows:
                w.writerow([r[c] for c in cols])
    return path


@pytest.mark.parametrize("suffix", [".xlsx", ".tsv", ".csv"])
def test_vlmevalkit_tables(tmp_path, tsv, suffix, capsys):
    preds = write_table(tmp_path / f"model_MMBench_DEV_EN{suffix}", vlmevalkit_rows({0: "B", 1: "A. yes", 1000000: "zero"}))
    out = tmp_path / "out"
    assert main(["eval", "mmbench", "--predictions", str(preds), "--data", str(tsv), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # group 0: B right, rotation "zero" is B there = wrong -> fails; group 1 (its rotation not in the
    # predictions, so not generated here) right
    assert m["questions"] == 2 and m["rows"] == 3
    assert m["circular_accuracy"] == 0.5 and m["plain_accuracy"] == 1.0
    assert "circular accuracy 50.00%" in capsys.readouterr().out


def test_own_predictions_round_trip(tmp_path, tsv):
    items = load_mmbench(str(tsv))
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps({"id": i.id, "benchmark": "mmbench", "question": i.question, "prediction": "A"})
                              for i in items) + "\n")
    got = read_predictions_file(str(path), "mmbench", items)
    assert set(got) == {i.id for i in items} and "1000001" in got  # the generated rotation is answered too


def test_another_dataset(tmp_path, tsv, capsys):
    items = load_mmbench(str(tsv))
    other = write_table(tmp_path / "other.tsv", [{"index": 7, "question": "What colour?", "prediction": "A"},
                                                 {"index": 8, "question": "What shape?", "prediction": "B"}])
    with pytest.raises(DataError, match="none of the 2 ids in other.tsv is in the data.*for another dataset"):
        read_predictions_file(str(other), "mmbench", items)
    same_ids = write_table(tmp_path / "same_ids.tsv", [{"index": 0, "question": "What colour?", "prediction": "A"}])
    with pytest.raises(DataError, match=r"same_ids.tsv row 2: id 0 has the question 'What colour\?'.*another dataset"):
        read_predictions_file(str(same_ids), "mmbench", items)
    vqa = tmp_path / "vqa_predictions.jsonl"
    vqa.write_text(json.dumps({"id": "0", "benchmark": "vqa", "question": "Which digit?", "prediction": "one"}) + "\n")
    code = main(["eval", "mmbench", "--predictions", str(vqa), "--data", str(tsv), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "a vqa prediction, but this is a mmbench evaluation" in err and "Traceback" not in err
    nocol = write_table(tmp_path / "nocol.csv", [{"index": 0, "answer": "A"}])
    with pytest.raises(DataError, match="missing column `prediction`"):
        read_predictions_file(str(nocol), "mmbench", items)
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"question_id": 0, "text": "A"}\n{"question_id": 0, "text": "B"}\n')
    with pytest.raises(DataError, match="twice.jsonl line 2: id 0 was already answered at twice.jsonl line 1"):
        read_predictions_file(str(twice), "mmbench", items)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="garbage.jsonl line 1: expected"):
        read_predictions_file(str(garbage), "mmbench", items)


def test_usage_errors(tmp_path, tsv, capsys):
    assert main(["eval", "mmbench", "--data", str(tsv), "--out", str(tmp_path / "o")]) == 2
    assert "give MODEL, or --predictions FILE" in capsys.readouterr().err
    assert main(["eval", "mmbench", "m", "--predictions", "p.jsonl", "--data", str(tsv), "--out", str(tmp_path / "o")]) == 2
    assert "not both" in capsys.readouterr().err
