"""One test per reason slug through `vlmtune data check --json`, with files made in tmp_path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmtune.cli import main

rng = np.random.default_rng(0)


def photo(path, size=(48, 32), mode="RGB", fmt=None, **kw):
    a = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(a, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def conv(image=None, q="<image>\nWhat is it?", a="A photo.", id=None):
    rec = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    if image is not None:
        rec["image"] = image
    if id is not None:
        rec["id"] = id
    return rec


def check(capsys, tmp_path, records, *extra):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    code = main(["data", "check", str(data), "--image-folder", str(tmp_path / "img"), "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def reasons(report):
    return [p["reason"] for p in report["problems"]]


@pytest.fixture
def folder(tmp_path):
    photo(tmp_path / "img" / "ok.jpg")
    return tmp_path


def test_clean(capsys, folder):
    code, rep = check(capsys, folder, [conv("ok.jpg", id="a"), conv(q="Hi", a="Hello!")])
    assert code == 0 and rep["records"] == 2 and rep["ok"] == 2 and rep["problems"] == []
    assert rep["modalities"] == {"text": 1, "image": 1, "multi_image": 0}
    assert rep["lengths"] is None and any("--model" in n for n in rep["notes"])


def test_missing_image(capsys, folder):
    code, rep = check(capsys, folder, [conv("ok.jpg"), conv("nope.jpg", id=7)])
    assert code == 1 and rep["ok"] == 1
    assert rep["problems"] == [{"index": 1, "id": "7", "reason": "missing-image", "detail": rep["problems"][0]["detail"],
                                "source": str(folder / "data.json")}]
    assert "nope.jpg" in rep["problems"][0]["detail"]


def test_truncated_jpeg(capsys, folder):
    raw = (folder / "img" / "ok.jpg").read_bytes()
    (folder / "img" / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    code, rep = check(capsys, folder, [conv("cut.jpg")])
    assert code == 1 and reasons(rep) == ["unreadable-image"] and "truncated" in rep["problems"][0]["detail"]


def test_zero_byte_file(capsys, folder):
    (folder / "img" / "empty.png").write_bytes(b"")
    code, rep = check(capsys, folder, [conv("empty.png")])
    assert code == 1 and reasons(rep) == ["unreadable-image"] and "0-byte" in rep["problems"][0]["detail"]


def test_over_pixel_limit(capsys, folder, monkeypatch):
    photo(folder / "img" / "big.png", size=(200, 200))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 200*200 > 2*5000: DecompressionBombError
    photo(folder / "img" / "warn.png", size=(80, 80))  # 6400: the warning range, also refused
    code, rep = check(capsys, folder, [conv("big.png"), conv("warn.png")])
    assert code == 1 and reasons(rep) == ["unreadable-image", "unreadable-image"]
    assert all("decompression-bomb" in p["detail"] for p in rep["problems"])


def test_dotdot_absolute_and_symlink(capsys, folder):
    photo(folder / "outside.jpg")
    os.symlink(folder / "outside.jpg", folder / "img" / "link.jpg")
    code, rep = check(capsys, folder, [conv("../outside.jpg"), conv(str(folder / "outside.jpg")), conv("link.jpg")])
    assert code == 1 and reasons(rep) == ["path-outside-image-folder"] * 3


def test_url_refused(capsys, folder):
    code, rep = check(capsys, folder, [conv("https://example.com/cat.jpg")])
    assert code == 1 and reasons(rep) == ["url-not-allowed"]


def test_structure_reasons(capsys, folder):
    recs = [
        conv("ok.jpg", q="What is it?"),                                        # image-token-count
        {"conversations": []},                                                 # empty-conversation
        {"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}]},  # bad-role-order
        {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},   # bad-role-order
        {"conversations": [{"from": "human", "value": "a"}]},                  # bad-role-order (ends with user)
        {"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "b"}]},      # bad-field
        {"conversations": [{"from": "human"}, {"from": "gpt", "value": "b"}]},                  # bad-field
        ["not", "an", "object"],                                               # bad-field
    ]
    code, rep = check(capsys, folder, recs)
    assert code == 1 and rep["ok"] == 0
    assert reasons(rep) == ["image-token-count", "empty-conversation", "bad-role-order", "bad-role-order",
                            "bad-role-order", "bad-field", "bad-field", "bad-field"]
    assert [p["index"] for p in rep["problems"]] == list(range(8))


def test_token_reasons(capsys, folder, tok_dir):
    recs = [conv("ok.jpg"), conv("ok.jpg", a="one two three " * 40), conv(q="Hi", a="Hello!")]
    code, rep = check(capsys, folder, recs, "--tokenizer", str(tok_dir), "--image-seq-len", "576", "--max-length", "660")
    assert code == 1 and reasons(rep) == ["too-long"] and rep["problems"][0]["index"] == 1
    assert "576 image tokens" in rep["problems"][0]["detail"]
    # lengths include the too-long records: the true max is what a user sizes data.max_length by
    too_long = [int(p["detail"].split()[0]) for p in rep["problems"] if p["reason"] == "too-long"]
    assert too_long and rep["lengths"]["max"] == max(too_long) > 660 and rep["lengths"]["min"] < 100
    assert rep["notes"] == []


def test_no_trained_tokens_and_template_mismatch(capsys, folder, tok_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tok_dir)
    t.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # answer glued to the question
    d = folder / "tok2"
    t.save_pretrained(d)
    recs = [conv(q="What digit", a="is it"), conv(q="The dig", a="it is odd.")]
    code, rep = check(capsys, folder, recs, "--tokenizer", str(d), "--template", "model")
    assert code == 1 and "template-mismatch" in reasons(rep)

    code, rep = check(capsys, folder, [{"text": ""}], "--tokenizer", str(tok_dir), "--template", "raw")
    assert code == 0  # EOS alone is trained
    plain = [{"image": "ok.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": ""}]}]
    code, rep = check(capsys, folder, plain, "--tokenizer", str(tok_dir), "--template", "plain")
    assert code == 0  # "\n" is trained


def test_cmyk_and_exif_load(capsys, folder):
    from vlmtune.data.images import load_image

    cmyk = photo(folder / "img" / "cmyk.jpg", mode="CMYK")
    assert Image.open(cmyk).mode == "CMYK"
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(folder / "img" / "rot.jpg", exif=exif)
    code, rep = check(capsys, folder, [conv("cmyk.jpg"), conv("rot.jpg")])
    assert code == 0
    assert load_image(str(cmyk)).mode == "RGB"
    assert load_image(str(folder / "img" / "rot.jpg")).size == (20, 40)


def test_unusable_input_exits_2(capsys, tmp_path):
    assert main(["data", "check", str(tmp_path / "nope.json")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")  # not JSON Lines at all
    assert main(["data", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 1" in err and "Traceback" not in err
    (tmp_path / "x.txt").write_text("hi")
    assert main(["data", "check", str(tmp_path / "x.txt")]) == 2
    (tmp_path / "obj.json").write_text('{"a": 1}')
    assert main(["data", "check", str(tmp_path / "obj.json")]) == 2


def test_bad_jsonl_line_is_a_record_problem(capsys, tmp_path):
    """One broken line of a large JSONL file is reported like any bad record; the rest are still checked."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n{"text": "also ok"}\n')
    assert main(["data", "check", str(bad), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["records"] == 3 and rep["ok"] == 2
    assert [(p["index"], p["reason"]) for p in rep["problems"]] == [(1, "bad-json")]
    assert "line 2" in rep["problems"][0]["detail"]


def test_human_summary(capsys, folder):
    data = folder / "d.json"
    data.write_text(json.dumps([conv("ok.jpg"), conv("missing.jpg", id="m1"), conv(q="Hi", a="Hello")]))
    assert main(["data", "check", str(data), "--image-folder", str(folder / "img")]) == 1
    out = capsys.readouterr().out
    assert "record 1 (id m1): missing-image" in out
    assert "2 single-image" in out and "1 text-only" in out and "--model" in out


def test_real_subprocess(tmp_path):
    photo(tmp_path / "img" / "ok.jpg")
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [conv("ok.jpg"), conv("empty.jpg", id="e")]))
    exe = Path(sys.executable).parent / "vlmtune"
    r = subprocess.run([str(exe), "data", "check", str(data), "--image-folder", str(tmp_path / "img"), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["records"] == 2 and rep["ok"] == 1 and rep["problems"][0]["reason"] == "unreadable-image"
    r = subprocess.run([str(exe), "data", "check", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr
