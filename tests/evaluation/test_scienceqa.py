"""ScienceQA: LLaVA's prompt, the "Total, Correct, Accuracy, IMG-Accuracy" line, hand-worked scores."""

import json

import pytest

from vlmtune.cli import main
from vlmtune.errors import DataError
from vlmtune.evaluation.scienceqa import load_scienceqa, score_scienceqa

INSTR = "Answer with the option's letter from the given choices directly."


def write_sqa(folder, digit_png):
    (folder / "images" / "11").mkdir(parents=True)
    (folder / "images" / "11" / "image.png").write_bytes(digit_png(3))
    (folder / "images" / "12").mkdir(parents=True)
    (folder / "images" / "12" / "image.png").write_bytes(digit_png(4))
    problems = {
        "11": {"question": "Which digit is shown?", "choices": ["two", "three"], "answer": 1, "image": "image.png", "split": "test"},
        "12": {"question": "Is it even?", "choices": ["yes", "no", "maybe"], "answer": 0, "image": "image.png", "split": "test"},
        "13": {"question": "Which is a mammal?", "choices": ["cat", "trout"], "answer": 0, "image": None, "split": "test"},
        "14": {"question": "Which is a bird?", "choices": ["robin", "bat"], "answer": 0, "image": None, "split": "test"},
        "99": {"question": "Train only", "choices": ["a", "b"], "answer": 0, "image": None, "split": "train"},
    }
    questions = [
        {"id": "11", "image": "11/image.png", "conversations": [
            {"from": "human", "value": f"<image>\nContext: A digit.\nWhich digit is shown?\nA. two\nB. three\n{INSTR}"},
            {"from": "gpt", "value": "B"}]},
        {"id": "12", "image": "12/image.png", "conversations": [
            {"from": "human", "value": "Is it even?\nA. yes\nB. no\nC. maybe\n<image>"}, {"from": "gpt", "value": "A"}]},
        {"id": "13", "conversations": [{"from": "human", "value": f"Which is a mammal?\nA. cat\nB. trout\n{INSTR}"}]},
        {"id": "14", "conversations": [{"from": "human", "value": f"Which is a bird?\nA. robin\nB. bat\n{INSTR}"}]},
        {"id": "99", "conversations": [{"from": "human", "value": "Train only\nA. a\nB. b"}]},
    ]
    (folder / "problems.json").write_text(json.dumps(problems))
    (folder / "pid_splits.json").write_text(json.dumps({"test": ["11", "12", "13", "14"], "train": ["99"]}))
    (folder / "llava_test_CQM-A.json").write_text(json.dumps(questions))
    return folder


def test_prompts_and_line(tmp_path, digit_png):
    d = write_sqa(tmp_path, digit_png)
    items = load_scienceqa(str(d / "llava_test_CQM-A.json"), problems=str(d / "problems.json"),
                           pid_splits=str(d / "pid_splits.json"), image_folder=str(d / "images"))
    assert [i.id for i in items] == ["11", "12", "13", "14"]  # 99 is not in the test split
    assert items[0].prompt == f"<image>\nContext: A digit.\nWhich digit is shown?\nA. two\nB. three\n{INSTR}"
    assert items[1].prompt == f"<image>\nIs it even?\nA. yes\nB. no\nC. maybe\n{INSTR}"
    assert items[2].prompt == f"Which is a mammal?\nA. cat\nB. trout\n{INSTR}"
    # 11 right, 12 wrong (image questions); 13 right ("The answer is A."), 14 unparseable
    m, _ = score_scienceqa(items, {"11": "B", "12": "B. no", "13": "The answer is A.", "14": "a bird"})
    assert m["line"] == "Total: 4, Correct: 2, Accuracy: 50.00%, IMG-Accuracy: 50.00%"
    assert (m["total"], m["correct"], m["img_total"], m["img_correct"]) == (4, 2, 2, 1)
    assert m["unparseable"] == 1


def test_cli_predictions_without_question_file(tmp_path, digit_png, capsys):
    d = write_sqa(tmp_path, digit_png)
    preds = tmp_path / "answers.jsonl"  # LLaVA's answer file format; 14 missing counts as wrong
    preds.write_text("\n".join(json.dumps({"question_id": q, "prompt": "...", "text": t})
                               for q, t in [("11", "B"), ("12", "A"), ("13", "trout")]) + "\n")
    code = main(["eval", "scienceqa", "--predictions", str(preds), "--problems", str(d / "problems.json"),
                 "--pid-splits", str(d / "pid_splits.json"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Total: 4, Correct: 2, Accuracy: 50.00%, IMG-Accuracy: 100.00%" in out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["accuracy"] == 0.5 and m["img_accuracy"] == 1.0 and m["missing"] == 1


def test_bad_scienceqa(tmp_path, digit_png):
    d = write_sqa(tmp_path, digit_png)
    with pytest.raises(DataError, match="no split 'val'"):
        load_scienceqa(str(d / "llava_test_CQM-A.json"), problems=str(d / "problems.json"),
                       pid_splits=str(d / "pid_splits.json"), split="val")
    (d / "other.json").write_text(json.dumps([{"id": "5", "conversations": [{"from": "human", "value": "q"}]}]))
    with pytest.raises(DataError, match=r"record 0 \(id 5\): problem 5 is not in problems.json"):
        load_scienceqa(str(d / "other.json"), problems=str(d / "problems.json"))
