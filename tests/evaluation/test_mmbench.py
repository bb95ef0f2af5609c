"""MMBench: reading, LLaVA's prompt, generated rotations, CircularEval against hand-worked scores, errors."""

import base64
import json

import pytest

from vlmtune.cli import main
from vlmtune.errors import DataError
from vlmtune.evaluation.mmbench import build_prompt, load_mmbench, score_mmbench, write_submission

DIGITS = ["zero", "one", "two", "three", "four"]


def dev_rows():
    """Group 0 has all four rotations in the file; group 1 (two options) and group 2 (with E) have none."""
    q0 = {"question": "Which digit is shown?", "hint": "A handwritten digit.", "category": "digits", "l2-category": "perception"}
    rows = [
        {"index": 0, **q0, "A": "zero", "B": "one", "C": "two", "D": "three", "answer": "B"},
        {"index": 1, "question": "Is the digit even?", "A": "yes", "B": "no", "answer": "A",
         "category": "parity", "l2-category": "reasoning"},
        {"index": 2, "question": "How many strokes?", "A": "1", "B": "2", "C": "3", "D": "4", "E": "5", "answer": "E",
         "category": "digits", "l2-category": "perception"},
        {"index": 1000000, **q0, "A": "one", "B": "two", "C": "three", "D": "zero", "answer": "A"},
        {"index": 2000000, **q0, "A": "two", "B": "three", "C": "zero", "D": "one", "answer": "D"},
        {"index": 3000000, **q0, "A": "three", "B": "zero", "C": "one", "D": "two", "answer": "C"},
    ]
    return rows


COLS = ["index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "l2-category", "image"]


@pytest.fixture
def dev_tsv(tmp_path, make_mmbench):
    return make_mmbench(tmp_path / "MMBench_DEV_EN.tsv", dev_rows(), COLS)


def test_prompt_is_llavas():
    p = build_prompt("Which digit?", "A hint.", ["zero", "one"], "en")
    assert p == "<image>\nA hint.\nWhich digit?\nA. zero\nB. one\nAnswer with the option's letter from the given choices directly."
    assert build_prompt("哪个?", "nan", ["一", "二"], "cn") == "<image>\n哪个?\nA. 一\nB. 二\n请直接回答选项字母。"


def test_rotations_generated(dev_tsv):
    items = load_mmbench(str(dev_tsv))
    ids = [i.id for i in items]
    # group 0 complete (4 rows); group 1 gains 1 rotation, group 2 (five options) gains 4
    assert len(items) == 4 + 2 + 5
    assert "1000001" in ids and "4000002" in ids
    by = {i.id: i for i in items}
    assert by["1000001"].meta["options"] == {"A": "no", "B": "yes"} and by["1000001"].meta["answer"] == "B"
    assert by["1000002"].meta["options"] == {"A": "2", "B": "3", "C": "4", "D": "5", "E": "1"}
    assert by["1000002"].meta["answer"] == "D"
    assert by["4000002"].meta["answer"] == "A"
    assert by["2"].prompt.endswith("D. 4\nE. 5\nAnswer with the option's letter from the given choices directly.")
    assert not load_mmbench(str(dev_tsv), circular=False)[-1].meta["generated"]
    assert len(load_mmbench(str(dev_tsv), limit=1)) == 4


def test_circular_scoring_hand_worked(dev_tsv):
    items = load_mmbench(str(dev_tsv))
    preds = {
        "0": "B", "1000000": "A", "2000000": "D", "3000000": "A",  # last rotation wrong: group 0 fails
        "1": "yes", "1000001": "(B)",                              # option text and (B): group 1 passes
        "2": "E", "1000002": "D.", "2000002": "C", "3000002": "The answer is B", "4000002": "A",
    }
    m, rows = score_mmbench(items, preds)
    assert m["questions"] == 3 and m["rows"] == 11 and m["generated_rotations"] == 5
    assert m["circular_accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy"] == m["circular_accuracy"]
    assert m["plain_accuracy"] == 1.0
    assert m["row_accuracy"] == pytest.approx(10 / 11)
    assert m["category"]["digits"] == {"questions": 2, "circular_accuracy": 0.5, "plain_accuracy": 1.0}
    assert m["category"]["parity"]["circular_accuracy"] == 1.0
    assert m["l2-category"]["perception"]["circular_accuracy"] == 0.5
    assert m["unparseable"] == 0 and m["missing"] == 0
    # an unparseable answer and a missing one: both wrong, the first listed
    preds["1"] = "maybe"
    del preds["2"]
    m, _ = score_mmbench(items, preds)
    assert m["circular_accuracy"] == 0.0 and m["plain_accuracy"] == pytest.approx(1 / 3)
    assert m["unparseable"] == 1 and m["unparseable_items"] == [{"id": "1", "prediction": "maybe"}]
    assert m["missing"] == 1


def test_chinese_file_and_image_by_index(tmp_path, make_mmbench):
    rows = [{"index": 5, "question": "图中是哪个数字？", "hint": "", "A": "零", "B": "一", "answer": "B", "category": "数字"},
            {"index": 1000005, "question": "图中是哪个数字？", "hint": "", "A": "一", "B": "零", "answer": "A",
             "category": "数字", "image": "5"}]
    path = make_mmbench(tmp_path / "MMBench_DEV_CN.tsv", rows)
    items = load_mmbench(str(path))
    assert len(items) == 2 and items[0].prompt.endswith("\n请直接回答选项字母。")
    assert items[1].images[0].base64 == items[0].images[0].base64
    m, _ = score_mmbench(items, {"5": "B。", "1000005": "答案是A"})
    assert m["circular_accuracy"] == 1.0
    assert items[1].load_images()[0].size == (32, 32)


@pytest.mark.parametrize("change,message", [
    (lambda rows, cols: (rows, [c for c in cols if c != "question"]), "missing column `question`"),
    (lambda rows, cols: ([rows[0], {**rows[1], "B": "nan"}] + rows[2:], cols), "line 3 (index 1), column `B`: only 1 option"),
    (lambda rows, cols: ([rows[0], {**rows[1], "answer": "C"}] + rows[2:], cols), "line 3 (index 1), column `answer`"),
    (lambda rows, cols: ([rows[0], {**rows[1], "index": "x1"}] + rows[2:], cols), "line 3, column `index`"),
    (lambda rows, cols: (rows + [{**rows[0]}], cols), "indexes must be unique"),
    (lambda rows, cols: ([{**rows[0], "C": "", "D": "three"}] + rows[1:], cols), "column `D`: option D is given but option C"),
])
def test_bad_tsv(tmp_path, make_mmbench, change, message):
    rows, cols = change(dev_rows(), COLS)
    path = make_mmbench(tmp_path / "bad.tsv", rows, cols)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mmbench(str(path))


def test_bad_base64_names_row_and_column(tmp_path, make_mmbench, tiny_vlm, capsys):
    rows = dev_rows()
    rows[1]["image"] = "%%%" + "not base64 at all " * 5
    path = make_mmbench(tmp_path / "bad.tsv", rows, COLS)
    code = main(["eval", "mmbench", str(tiny_vlm), "--data", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.tsv line 3 (index 1), column `image`: not decodable base64" in err and "Traceback" not in err
    # base64 that decodes, but to no image
    rows[1]["image"] = base64.b64encode(b"just some bytes, no image here " * 4).decode()
    make_mmbench(path, rows, COLS)
    assert main(["eval", "mmbench", str(tiny_vlm), "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "line 3 (index 1), column `image`: not an image" in capsys.readouterr().err


def test_missing_column_through_cli(tmp_path, make_mmbench, capsys):
    path = make_mmbench(tmp_path / "nohead.tsv", dev_rows(), [c for c in COLS if c != "image"])
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "0", "prediction": "B"}) + "\n")
    assert main(["eval", "mmbench", "--predictions", str(preds), "--data", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "nohead.tsv: missing column `image`" in capsys.readouterr().err


def test_submission_for_test_split(tmp_path, make_mmbench):
    openpyxl = pytest.importorskip("openpyxl")
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in dev_rows()]
    path = make_mmbench(tmp_path / "MMBench_TEST_EN.tsv", rows, [c for c in COLS if c != "answer"])
    items = load_mmbench(str(path))
    assert len(items) == 6  # nothing generated without answers
    preds = {"0": "B", "1": "no", "2": "(E) 5", "1000000": "hmm", "2000000": "D", "3000000": "C. one"}
    m, _ = score_mmbench(items, preds)
    assert not m["has_answers"] and "accuracy" not in m
    out = write_submission(str(tmp_path / "submission.xlsx"), items, preds)
    ws = openpyxl.load_workbook(out).active
    table = list(ws.values)
    assert table[0][-1] == "prediction" and "image" not in table[0]
    got = {r[0]: r[-1] for r in table[1:]}
    assert got == {0: "B", 1: "B", 2: "E", 1000000: "hmm", 2000000: "D", 3000000: "C"}
