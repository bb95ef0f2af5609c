"""Every record format, in .json, .jsonl and .parquet, mixed into one dataset."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlmtune.data.readers import load_samples, parse_record, read_records
from vlmtune.data.sample import RecordProblem
from vlmtune.errors import DataError

LLAVA = {"id": "l1", "image": "a.jpg", "conversations": [
    {"from": "system", "value": "Be brief."}, {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]}
LLAVA_MULTI = {"id": 2, "image": ["a.jpg", "b.jpg"], "conversations": [
    {"from": "human", "value": "<image> vs <image>"}, {"from": "gpt", "value": "Same."},
    {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]}
MINICPM = {"id": "m1", "image": {"<image_01>": "b.jpg", "<image_00>": "a.jpg"}, "conversations": [
    {"role": "user", "content": "<image_00>\nand <image_01>: differences?"}, {"role": "assistant", "content": "Colour."}]}
TEXT_CHAT = {"id": "t1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
CAPTION = {"image": "c.jpg", "caption": "a cup of coffee"}
PRETRAIN_558K = {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
    {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
    {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]}
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
RAW = {"text": "Continued pretraining text."}


def test_formats():
    s = parse_record(LLAVA, 0, "f")
    assert [m.role for m in s.messages] == ["system", "user", "assistant"] and s.images == ["a.jpg"] and s.kind == "chat"
    s = parse_record(LLAVA_MULTI, 1, "f")
    assert s.id == "2" and s.images == ["a.jpg", "b.jpg"] and len(s.messages) == 4
    s = parse_record(MINICPM, 2, "f")
    assert s.messages[0].content == "<image>\nand <image>: differences?" and s.images == ["a.jpg", "b.jpg"]
    s = parse_record(TEXT_CHAT, 3, "f")
    assert s.images == [] and s.kind == "chat"
    s = parse_record(CAPTION, 4, "f")
    assert s.kind == "caption" and s.messages[0].content == "<image>" and s.messages[1].content == "a cup of coffee"
    s = parse_record(PRETRAIN_558K, 5, "f")
    assert s.kind == "chat" and s.images == ["00453/004539375.jpg"]
    s = parse_record(ALPACA, 6, "f")
    assert s.messages[0].content == "Add the numbers.\n\n2 and 3" and s.messages[1].content == "5"
    s = parse_record(RAW, 7, "f")
    assert s.kind == "text" and [m.role for m in s.messages] == ["assistant"]


def test_minicpm_key_missing_from_text():
    rec = dict(MINICPM, image={"<image_00>": "a.jpg", "<image_05>": "z.jpg"})
    with pytest.raises(RecordProblem) as e:
        parse_record(rec, 0, "f")
    assert e.value.reason == "image-token-count"


def test_mixed_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([LLAVA, MINICPM, CAPTION]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [TEXT_CHAT, ALPACA, RAW]) + "\n")
    pq.write_table(pa.Table.from_pylist([dict(LLAVA_MULTI, id="2"), TEXT_CHAT]), tmp_path / "c.parquet")  # text-only row: image null
    paths = [str(tmp_path / n) for n in ("a.json", "b.jsonl", "c.parquet")]
    recs = read_records(paths)
    assert [i for _, i, _ in recs] == list(range(8))
    assert [src.rsplit("/", 1)[1] for src, _, _ in recs] == ["a.json"] * 3 + ["b.jsonl"] * 3 + ["c.parquet"] * 2
    samples, problems = load_samples(paths)
    assert problems == [] and len(samples) == 8
    assert [s.kind for s in samples] == ["chat", "chat", "caption", "chat", "chat", "text", "chat", "chat"]
    assert samples[6].images == ["a.jpg", "b.jpg"] and samples[7].images == []


def test_load_samples_reports_problems(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps(TEXT_CHAT) + "\n" + json.dumps({"id": "x", "foo": 1}) + "\n")
    samples, problems = load_samples(str(tmp_path / "d.jsonl"))
    assert len(samples) == 1
    assert problems == [{"index": 1, "id": "x", "reason": "bad-field", "detail": problems[0]["detail"], "source": str(tmp_path / "d.jsonl")}]


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="bad.json"):
        read_records(str(tmp_path / "bad.json"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="bad.parquet"):
        read_records(str(tmp_path / "bad.parquet"))
    (tmp_path / "lines.json").write_text(json.dumps(RAW) + "\n" + json.dumps(RAW) + "\n")  # JSONL named .json
    assert len(read_records(str(tmp_path / "lines.json"))) == 2
