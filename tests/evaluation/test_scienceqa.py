"""ScienceQA: LLaVA's prompt, the "Total, Correct, Accuracy, IMG-Accuracy" line, hand-worked scores."""

import json

import pytest

from vlmtune.cli import main
from vlmtune.errors import DataError
from vlmtune.evaluation.scienceqa import load_scienceqa, score_scienceqa

INSTR = "Answer with the option's letter from the given choices directly."


def test_prompts_and_line(tmp_path, make_sqa):
    d = make_sqa(tmp_path)
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


def test_cli_predictions_without_question_file(tmp_path, make_sqa, capsys):
    d = make_sqa(tmp_path)
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


def test_bad_scienceqa(tmp_path, make_sqa):
    d = make_sqa(tmp_path)
    with pytest.raises(DataError, match="no split 'val'"):
        load_scienceqa(str(d / "llava_test_CQM-A.json"), problems=str(d / "problems.json"),
                       pid_splits=str(d / "pid_splits.json"), split="val")
    (d / "other.json").write_text(json.dumps([{"id": "5", "conversations": [{"from": "human", "value": "q"}]}]))
    with pytest.raises(DataError, match=r"record 0 \(id 5\): problem 5 is not in problems.json"):
        load_scienceqa(str(d / "other.json"), problems=str(d / "problems.json"))
    probs = json.loads((d / "problems.json").read_text())
    probs["13"]["choices"] = ["cat"]
    (d / "problems.json").write_text(json.dumps(probs))
    with pytest.raises(DataError, match="problem 13, field `choices`: 1 choice"):
        load_scienceqa(str(d / "llava_test_CQM-A.json"), problems=str(d / "problems.json"))
