"""VQA normalisation and accuracy against hand-worked cases; the JSONL reader."""

import json

import pytest

from vlmtune.errors import DataError
from vlmtune.evaluation.vqa import load_vqa, normalize_vqa_answer, score_vqa, vqa_accuracy


@pytest.mark.parametrize("raw,norm", [
    ("Yes.", "yes"), ("Two dogs.", "2 dogs"), ("The cat", "cat"), ("an apple", "apple"), ("dont", "don't"),
    ("isnt it", "isn't it"), ("2.5", "2.5"), ("1,000", "1000"), ("red, white", "red white"), ("What?", "what"),
    ("none", "0"), ("ten", "10"), ("t-shirt", "t shirt"), ("yes!\n", "yes"), ("  A  Man ", "man"),
])
def test_normalize(raw, norm):
    assert normalize_vqa_answer(raw) == norm


def test_accuracy_hand_worked():
    ten_yes = ["yes"] * 10
    assert vqa_accuracy("Yes.", ten_yes) == 1.0
    # 2 of 10 said "yes": leaving out a "yes" voter leaves 1 match (1/3), any other leaves 2 (2/3)
    two = ["yes", "yes"] + ["no"] * 8
    assert vqa_accuracy("yes", two) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    # 3 said "2", written as "two" and "2" and "Two": all normalise to "2"; 7 said "3"
    three = ["two", "2", "Two"] + ["3"] * 7
    assert vqa_accuracy("2", three) == pytest.approx((3 * (2 / 3) + 7 * 1.0) / 10)
    assert vqa_accuracy("four", three) == 0.0
    # 4 or more matching voters: 1 for every subset
    assert vqa_accuracy("the dog", ["dog"] * 4 + ["cat"] * 6) == 1.0
    # one reference answer: normalised exact match
    assert vqa_accuracy("The Cat.", ["cat"]) == 1.0
    assert vqa_accuracy("cats", ["cat"]) == 0.0


def test_reader_and_score(tmp_path, digit_folder):
    data = tmp_path / "vqa.jsonl"
    recs = [{"question_id": 7, "image": "d0.png", "question": "What digit is this?", "answers": ["zero"] * 10},
            {"question_id": 8, "image": "d1.png", "question": "What digit is this?",
             "answers": [{"answer": "one", "answer_id": i} for i in range(10)]},
            {"id": "x", "image": "d2.png", "text": "<image>\nWhat digit?", "answer": "2"}]
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    items = load_vqa(str(data), image_folder=str(digit_folder))
    assert [i.id for i in items] == ["7", "8", "x"]
    assert items[0].prompt == "<image>\nWhat digit is this?\nAnswer the question using a single word or phrase."
    assert items[2].question == "What digit?"
    m, rows = score_vqa(items, {"7": "Zero.", "8": "two", "x": "two"})
    assert m["accuracy"] == pytest.approx(2 / 3) and m["metric"] == "mixed" and m["scored"] == 3
    assert rows[1]["accuracy"] == 0.0


def test_bad_vqa(tmp_path, digit_folder):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"image": "missing.png", "question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl line 1 \(id 1\), field `image`: missing.png not found"):
        load_vqa(str(data), image_folder=str(digit_folder))
    data.write_text(json.dumps({"image": "../d0.png", "question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match="outside the image folder"):
        load_vqa(str(data), image_folder=str(digit_folder))
    data.write_text(json.dumps({"image": "d0.png", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"line 1 \(id 1\): missing `question`"):
        load_vqa(str(data), image_folder=str(digit_folder))
