"""`vlmtune eval` end to end on the tiny model: every benchmark, resuming an interrupted run."""

import json

import pytest

from vlmtune.cli import main
from vlmtune.inference import ChatModel

def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mmbench_end_to_end(tmp_path, tiny_vlm, make_mmbench, digit_questions, capsys):
    tsv = make_mmbench(tmp_path / "MMBench_DEV_EN.tsv", digit_questions(5))
    out = tmp_path / "out"
    code = main(["eval", "mmbench", str(tiny_vlm), "--data", str(tsv), "--out", str(out), "--batch-size", "4",
                 "--max-new-tokens", "4", "--no-progress"])
    assert code == 0
    assert "MMBench: 5 questions (15 rows), circular accuracy" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["questions"] == 5 and m["rows"] == 15 and m["generated_rotations"] == 10
    assert 0.0 <= m["circular_accuracy"] <= m["plain_accuracy"] <= 1.0
    preds = read_jsonl(out / "predictions.jsonl")
    assert len(preds) == 15 and all(p["benchmark"] == "mmbench" and isinstance(p["prediction"], str) for p in preds)
    assert preds[0]["prompt"].startswith("<image>\nWhich digit is shown?\nA. zero\nB. one\nC. two\nAnswer with")
    assert len(read_jsonl(out / "scored.jsonl")) == 15
    # the same answers scored again through --predictions give the same metrics
    again = tmp_path / "again"
    assert main(["eval", "mmbench", "--predictions", str(out / "predictions.jsonl"), "--data", str(tsv), "--out", str(again)]) == 0
    m2 = json.loads((again / "metrics.json").read_text())
    assert {k: m2[k] for k in ("circular_accuracy", "plain_accuracy", "rows")} == {k: m[k] for k in ("circular_accuracy", "plain_accuracy", "rows")}


def test_resume_after_interruption(tmp_path, tiny_vlm, make_mmbench, digit_questions, monkeypatch, capsys):
    tsv = make_mmbench(tmp_path / "MMBench_DEV_EN.tsv", digit_questions(4))
    args = ["eval", "mmbench", str(tiny_vlm), "--data", str(tsv), "--batch-size", "3", "--max-new-tokens", "3", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "clean")]) == 0
    clean = {p["id"]: p["prediction"] for p in read_jsonl(tmp_path / "clean" / "predictions.jsonl")}
    assert len(clean) == 12

    real = ChatModel.generate
    calls = []

    def interrupted(self, conversations, images=None, **kw):
        calls.append(len(conversations))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, conversations, images, **kw)

    monkeypatch.setattr(ChatModel, "generate", interrupted)
    out = tmp_path / "out"
    assert main(args + ["--out", str(out)]) == 130
    assert len(read_jsonl(out / "predictions.jsonl")) == 6  # two whole batches reached the disk
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "3", "benchmark": "mmb')  # a line torn by the interruption is redone
    capsys.readouterr()

    calls.clear()
    monkeypatch.setattr(ChatModel, "generate", lambda self, c, i=None, **kw: calls.append(len(c)) or real(self, c, i, **kw))
    assert main(args + ["--out", str(out)]) == 0
    assert "resuming: 6 of 12 questions already answered" in capsys.readouterr().err
    assert sum(calls) == 6
    resumed = {p["id"]: p["prediction"] for p in read_jsonl(out / "predictions.jsonl")}
    assert resumed == clean
    assert json.loads((out / "metrics.json").read_text())["circular_accuracy"] == \
        json.loads((tmp_path / "clean" / "metrics.json").read_text())["circular_accuracy"]

    # a finished run started again generates nothing; another model in the same folder is refused
    calls.clear()
    assert main(args + ["--out", str(out)]) == 0 and calls == []
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert main(["eval", "mmbench", str(other), "--data", str(tsv), "--out", str(out)]) == 2
    assert "use another --out folder" in capsys.readouterr().err


def test_vqa_and_scienceqa_end_to_end(tmp_path, tiny_vlm, digit_folder, make_sqa, capsys):
    data = tmp_path / "vqa.jsonl"
    data.write_text("\n".join(json.dumps({"question_id": i, "image": f"d{i}.png", "question": "What digit is this?",
                                          "answers": [str(i)] * 10}) for i in range(3)) + "\n")
    out = tmp_path / "vqa"
    assert main(["eval", "vqa", str(tiny_vlm), "--data", str(data), "--image-folder", str(digit_folder),
                 "--out", str(out), "--limit", "2", "--max-new-tokens", "3", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["questions"] == 2 and m["metric"] == "vqa_accuracy" and 0.0 <= m["accuracy"] <= 1.0
    assert "VQA: 2 questions" in capsys.readouterr().out

    (tmp_path / "sqa").mkdir()
    d = make_sqa(tmp_path / "sqa")
    out = tmp_path / "sqa-out"
    assert main(["eval", "scienceqa", str(tiny_vlm), "--data", str(d / "llava_test_CQM-A.json"),
                 "--image-folder", str(d / "images"), "--out", str(out), "--max-new-tokens", "3", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("Total: 4, Correct: ") and "IMG-Accuracy: " in line
    assert json.loads((out / "metrics.json").read_text())["line"] == line


def test_base_plus_adapter(tmp_path, tiny_vlm, digit_folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    adapter = tmp_path / "adapter"
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False)).save_pretrained(adapter)
    data = tmp_path / "vqa.jsonl"
    data.write_text(json.dumps({"question_id": 1, "image": "d1.png", "question": "What digit?", "answer": "1"}) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "vqa", str(tiny_vlm), "--adapter", str(adapter), "--data", str(data),
                 "--image-folder", str(digit_folder), "--out", str(out), "--max-new-tokens", "2", "--no-progress"]) == 0
    pred = read_jsonl(out / "predictions.jsonl")[0]
    assert pred["model"].endswith(" + " + str(adapter.resolve()))
    assert json.loads((out / "metrics.json").read_text())["metric"] == "exact_match"


def test_scoring_predictions_needs_no_images(tmp_path, make_sqa, capsys):
    """Regression: `--predictions` refused LLaVA's question file when the images were not on this machine."""
    (tmp_path / "sqa").mkdir()
    d = make_sqa(tmp_path / "sqa")
    import shutil

    shutil.rmtree(d / "images")  # scoring answers made elsewhere: the images are not here
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": k, "text": v}) + "\n"
                               for k, v in {"11": "B", "12": "The answer is B.", "13": "A. cat", "14": "no idea"}.items()))
    assert main(["eval", "scienceqa", "--predictions", str(answers), "--data", str(d / "llava_test_CQM-A.json"),
                 "--out", str(tmp_path / "o")]) == 0
    # 11 right (image), 12 wrong (image), 13 right, 14 unparseable: 2/4, IMG 1/2
    assert capsys.readouterr().out.strip().splitlines()[-1] == "Total: 4, Correct: 2, Accuracy: 50.00%, IMG-Accuracy: 50.00%"

    vqa = tmp_path / "vqa.jsonl"
    vqa.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": 1, "image": "gone.png", "question": "How many?", "answers": ["two"] * 3 + ["2"] + ["3"] * 6},
        {"question_id": 2, "image": "gone.png", "question": "What?", "answers": ["dog"] * 2 + ["cat"] * 8}]))
    preds = tmp_path / "vqa_preds.jsonl"
    preds.write_text(json.dumps({"question_id": 1, "text": "Two"}) + "\n" + json.dumps({"question_id": 2, "text": "a dog"}) + "\n")
    assert main(["eval", "vqa", "--predictions", str(preds), "--data", str(vqa), "--out", str(tmp_path / "v")]) == 0
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx((1.0 + 0.6) / 2)  # "Two"=2 matches 4 humans; "a dog" matches 2 of 10
