"""`vlmtune data preview` and a mixed-format `data check` through the CLI, including --model on a tiny LLaVA."""

import json
import shutil
from pathlib import Path

import pytest

import vlmtune
from vlmtune.cli import main

EXAMPLE = Path(vlmtune.__file__).parent / "assets" / "example" / "data.json"


def preview(capsys, *argv):
    code = main(["data", "preview", *map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_preview_template_only(capsys):
    code, out = preview(capsys, EXAMPLE, "--index", "1", "--template", "vicuna_v1")
    assert code == 0
    assert out["text"].endswith("USER: What colour is its fur? ASSISTANT: Ginger and brown, with darker stripes.</s>")
    assert out["supervised"] == ["A cat.</s>", "Ginger and brown, with darker stripes.</s>"]
    assert out["prompt"].endswith("USER: What colour is its fur? ASSISTANT:")
    assert "input_ids" not in out


def test_preview_with_tokenizer(capsys, tok_dir):
    code, out = preview(capsys, EXAMPLE, "--index", "0", "--template", "chatml", "--tokenizer", tok_dir, "--image-seq-len", "4")
    assert code == 0 and out["supervised"] == ["An astronaut in a white spacesuit, with an American flag behind her.<|im_end|>"]
    assert out["supervised_tokens"] == out["supervised"]
    assert len(out["input_ids"]) == len(out["labels"]) == out["num_tokens"]


def test_preview_human_colours_on_tty(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert main(["data", "preview", str(EXAMPLE), "--index", "5", "--template", "llama3"]) == 0
    out = capsys.readouterr().out
    assert "\033[1;32mThe digit is odd.<|eot_id|>\033[0m" in out


def test_preview_human_marks_without_tty(capsys):
    assert main(["data", "preview", str(EXAMPLE), "--index", "5"]) == 0
    assert "[[The digit is odd.</s>]]" in capsys.readouterr().out


def test_preview_bad_index_and_bad_record(capsys, tmp_path):
    assert main(["data", "preview", str(EXAMPLE), "--index", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps({"conversations": [{"from": "gpt", "value": "x"}]}) + "\n")
    code, out = preview(capsys, d)
    assert code == 1 and out["problem"]["reason"] == "bad-role-order"
    with pytest.raises(SystemExit) as e:  # argparse: usage error
        main(["data", "preview", str(EXAMPLE), "--template", "nope"])
    assert e.value.code == 2


def test_check_mixed_formats_with_tiny_llava(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmtune.models.tiny import build_tiny_llava

    shutil.copytree(EXAMPLE.parent / "images", tmp_path / "images")
    recs = json.loads(EXAMPLE.read_text())
    (tmp_path / "a.json").write_text(json.dumps(recs[:3]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"image": "images/coffee.jpg", "caption": "a cup of coffee"},
        {"instruction": "Say hi.", "output": "Hello!"}, {"text": "one two three"},
        {"id": "mc", "image": {"<image_00>": "images/digit_3.png"},
         "conversations": [{"role": "user", "content": "<image_00>\nWhich digit?"}, {"role": "assistant", "content": "three"}]}]))
    pq.write_table(pa.Table.from_pylist(recs[3:5]), tmp_path / "c.parquet")
    model = build_tiny_llava(tmp_path / "vlm")
    capsys.readouterr()  # building the model may log to stdout
    files = [tmp_path / "a.json", tmp_path / "b.jsonl", tmp_path / "c.parquet"]
    code = main(["data", "check", *map(str, files), "--model", str(model), "--image-folder", str(tmp_path), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 0, rep["problems"]
    assert rep["records"] == 9 and rep["ok"] == 9
    assert rep["modalities"] == {"text": 2, "image": 6, "multi_image": 1}
    assert rep["kinds"] == {"chat": 7, "caption": 1, "text": 1}
    assert rep["lengths"]["max"] > 2 * 16  # two images, 16 tokens each in the tiny CLIP


def test_llava_image_after_question_is_moved_first(capsys, tmp_path):
    """Regression: LLaVA-665k questions written `...?\\n<image>` rendered with the image last; LLaVA's
    preprocess_multimodal (and XTuner) put `<image>\\n` first, so vicuna_v1 was not byte-exact on them."""
    recs = [{"id": "000000052846", "image": "coco/train2017/000000052846.jpg", "conversations": [
                {"from": "human", "value": "Is the cat sitting?\n<image>"}, {"from": "gpt", "value": "Yes."},
                {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Grey."}]},
            {"id": "two", "image": ["a.jpg", "b.jpg"], "conversations": [  # several images: left where they are
                {"from": "human", "value": "Compare <image> and <image>"}, {"from": "gpt", "value": "Same."}]}]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    code, out = preview(capsys, data, "--index", "0", "--template", "vicuna_v1")
    assert code == 0
    assert out["text"] == ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                           "helpful, detailed, and polite answers to the user's questions. USER: <image>\nIs the cat "
                           "sitting? ASSISTANT: Yes.</s>USER: What colour? ASSISTANT: Grey.</s>")
    code, out = preview(capsys, data, "--index", "1", "--template", "chatml")
    assert code == 0 and "Compare <image> and <image>" in out["text"]
