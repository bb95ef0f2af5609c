"""SupervisedDataset + collate: images prepared, a record that turns bad is skipped (never swapped), tracking."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from vlmtune.data.dataset import BadSampleTracker, SupervisedDataset, collate
from vlmtune.data.images import load_image, prepare_image
from vlmtune.data.readers import load_samples
from vlmtune.data.templates import get_template
from vlmtune.errors import VlmtuneError


@pytest.fixture
def proc():
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def make(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(img / name)
    recs = [
        {"id": "a", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "one"}]},
        {"id": "b", "image": "b.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "two"}]},
        {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello! How can I help you today?"}]},
    ]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    samples, problems = load_samples(str(tmp_path / "d.json"))
    assert not problems
    return samples, img


def test_dataset_collate_and_skip(tmp_path, tok, proc):
    samples, img = make(tmp_path)
    ds = SupervisedDataset(samples, tokenizer=tok, template=get_template("vicuna_v1"), image_processor=proc,
                           image_folder=str(img), image_seq_len=16, max_length=256)
    item = ds[0]
    assert item["pixel_values"].shape == (1, 3, 32, 32) and item["index"] == 0
    assert (item["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum() == 16
    assert ds[2]["pixel_values"] is None

    (img / "b.png").unlink()  # deleted after the check
    batch = collate([ds[0], ds[1], ds[2]], pad_token_id=tok.pad_token_id)
    assert batch["num_samples"] == 2 and batch["indices"] == [0, 2]
    assert [s["reason"] for s in batch["skipped"]] == ["missing-image"] and batch["skipped"][0]["id"] == "b"
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.dtype == torch.long
    short = int(mask[1].sum())
    assert (ids[1, short:] == tok.pad_token_id).all() and (labels[1, short:] == -100).all()
    assert mask[0].all() or mask[1].all()

    empty = collate([ds[1]], pad_token_id=tok.pad_token_id)
    assert empty == {"skipped": [ds[1]["skipped"]], "num_samples": 0}


def test_too_long_at_load_time_is_skipped(tmp_path, tok, proc):
    samples, img = make(tmp_path)
    ds = SupervisedDataset(samples, tokenizer=tok, template=get_template("vicuna_v1"), image_processor=proc,
                           image_folder=str(img), image_seq_len=576, max_length=100)
    assert ds[0]["skipped"]["reason"] == "too-long"
    assert "input_ids" in ds[2]


def test_prepare_image_pad_and_resize(proc, tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    padded = prepare_image(img, "pad", proc)
    assert padded.size == (40, 40)
    assert padded.getpixel((0, 0)) == tuple(int(x * 255) for x in proc.image_mean)
    assert prepare_image(img, "resize", proc).size == (32, 32)
    assert prepare_image(img, "processor", proc) is img


def test_modes_become_rgb(tmp_path):
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.frombytes("I;16", (64, 64), arr.tobytes()).save(tmp_path / "i16.png")
    Image.new("LA", (8, 8), (10, 0)).save(tmp_path / "la.png")
    Image.new("P", (8, 8)).save(tmp_path / "p.gif")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "rgba.png")
    for name in ("i16.png", "la.png", "p.gif", "rgba.png"):
        assert load_image(str(tmp_path / name)).mode == "RGB", name
    assert load_image(str(tmp_path / "rgba.png")).getpixel((0, 0)) == (255, 255, 255)
    assert load_image((tmp_path / "la.png").read_bytes()).mode == "RGB"


def test_tracker(tmp_path):
    bad = {"index": 3, "id": "x", "reason": "missing-image", "detail": "gone", "source": "d.json"}
    path = tmp_path / "run" / "skipped.jsonl"
    t = BadSampleTracker(0.1, False, path)
    t.record([bad], seen=4)  # under min_seen: no stop yet
    t.record([], seen=30)
    assert t.count == 1 and json.loads(path.read_text()) == bad
    with pytest.raises(VlmtuneError, match="max_bad_fraction"):
        t.record([bad, bad, bad], seen=30)  # 4/30 > 0.1
    with pytest.raises(VlmtuneError, match="data.strict"):
        BadSampleTracker(0.5, True, None).record([bad], seen=1)
    with pytest.raises(VlmtuneError, match="max_bad_fraction"):
        BadSampleTracker(0.01, False, None, total=100).record([bad, bad], seen=2)  # 2 > 1% of 100
