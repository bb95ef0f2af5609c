"""The training-time dataset: samples → (input_ids, labels, pixel_values), with bad records skipped, never swapped.

    ds = SupervisedDataset(samples, tokenizer=tok, template=get_template("vicuna_v1"),
                           image_processor=proc, image_folder="images/", image_seq_len=576, max_length=2048)
    loader = DataLoader(ds, batch_size=4, collate_fn=functools.partial(collate, pad_token_id=tok.pad_token_id))
    tracker = BadSampleTracker(cfg.data.max_bad_fraction, cfg.data.strict, run / "skipped.jsonl", total=len(ds))
    for batch in loader:
        tracker.record(batch["skipped"], seen=...)     # logs to skipped.jsonl; raises when too many
        if batch["num_samples"] == 0: continue

A record that turns bad at load time (image deleted after the check, too long...) comes back as
`{"skipped": {index, id, reason, detail, source}}`. LLaVA masks such samples to loss 0 and MiniCPM-V
swaps in a random other sample; we skip, log and count instead.
"""

from __future__ import annotations

import json
import os

import torch
from torch.utils.data import Dataset

from vlmtune.data.images import load_image, prepare_image, resolve_image_path
from vlmtune.data.sample import IMAGE_PLACEHOLDER, RecordProblem, Sample, problem_dict
from vlmtune.data.tokenize import IGNORE_INDEX, encode_sample
from vlmtune.errors import VlmtuneError


def image_root(sample: Sample, image_folder: str | None) -> str:
    """The folder a sample's image paths are relative to: `image_folder`, else its data file's folder."""
    if image_folder is not None:
        return image_folder
    return os.path.dirname(os.path.abspath(sample.source)) if sample.source else os.getcwd()


class SupervisedDataset(Dataset):
    def __init__(self, samples: list[Sample], *, tokenizer, template, image_processor=None, image_folder=None,
                 image_seq_len=None, image_token=IMAGE_PLACEHOLDER, max_length, overlong="skip",
                 image_aspect_ratio="pad", allow_urls=False):
        self.samples = samples
        self.tokenizer, self.template = tokenizer, template
        self.image_processor, self.image_folder = image_processor, image_folder
        self.image_seq_len, self.image_token = image_seq_len, image_token
        self.max_length, self.overlong = max_length, overlong
        self.image_aspect_ratio, self.allow_urls = image_aspect_ratio, allow_urls

    def __len__(self) -> int:
        return len(self.samples)

    def _pixels(self, sample: Sample, n: int):
        if n == 0:
            return None
        if self.image_processor is None:
            raise VlmtuneError("the data has images but the model has no image processor (a text-only model?).")
        root = image_root(sample, self.image_folder)
        images = [prepare_image(load_image(resolve_image_path(p, root, self.allow_urls)), self.image_aspect_ratio,
                                self.image_processor) for p in sample.images[:n]]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.float()  # (n_images, 3, H, W)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        try:
            enc = encode_sample(sample, self.tokenizer, self.template, image_token=self.image_token,
                                image_seq_len=self.image_seq_len, max_length=self.max_length, overlong=self.overlong)
            pixels = self._pixels(sample, enc.num_images)
        except RecordProblem as p:
            return {"skipped": problem_dict(p.reason, p.detail, index=sample.index, id=sample.id, source=sample.source)}
        return {"input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
                "labels": torch.tensor(enc.labels, dtype=torch.long),
                "pixel_values": pixels, "index": sample.index}


def collate(batch: list[dict], pad_token_id: int) -> dict:
    """Right-pad the kept samples; `skipped` lists the skipped ones, `num_samples` counts the kept ones."""
    kept = [b for b in batch if "skipped" not in b]
    skipped = [b["skipped"] for b in batch if "skipped" in b]
    if not kept:
        return {"skipped": skipped, "num_samples": 0}
    width = max(len(b["input_ids"]) for b in kept)
    input_ids = torch.full((len(kept), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(kept), width), dtype=torch.long)
    for row, b in enumerate(kept):
        n = len(b["input_ids"])
        input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = b["input_ids"], b["labels"], 1
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
           "indices": [b["index"] for b in kept], "skipped": skipped, "num_samples": len(kept)}
    pixels = [b["pixel_values"] for b in kept if b.get("pixel_values") is not None]
    if pixels:
        out["pixel_values"] = torch.cat(pixels, dim=0)  # (total images in batch, 3, H, W)
    return out


class BadSampleTracker:
    """Counts skipped samples, appends them to `skipped.jsonl`, and stops the run when there are too many.

    - `strict`: the first skipped sample raises.
    - Otherwise it raises when more than `max_bad_fraction` of the samples seen so far were skipped, checked
      only once at least `min_seen` (20) samples were seen, so one early bad record doesn't stop a run;
      and, when `total` (the dataset size) is given, as soon as the skipped count alone exceeds
      `max_bad_fraction * total`, however few were seen.
    """

    def __init__(self, max_bad_fraction: float, strict: bool, path=None, *, total: int | None = None, min_seen: int = 20):
        self.max_bad_fraction, self.strict, self.path = max_bad_fraction, strict, path
        self.total, self.min_seen = total, min_seen
        self.count = 0
        self.reasons: dict[str, int] = {}

    def record(self, skipped: list[dict], seen: int) -> None:
        """`skipped`: this step's skipped dicts; `seen`: samples seen so far, skipped ones included."""
        if not skipped:
            return
        self.count += len(skipped)
        for s in skipped:
            self.reasons[s["reason"]] = self.reasons.get(s["reason"], 0) + 1
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for s in skipped:
                    f.write(json.dumps(s) + "\n")
        first = skipped[0]
        where = f"record {first['index']}" + (f" (id {first['id']})" if first.get("id") is not None else "")
        log = f" Logged to {self.path}." if self.path else ""
        if self.strict:
            raise VlmtuneError(f"data.strict is on and {where} was skipped: {first['reason']}: {first['detail']}.{log} "
                               "Fix the record (run `vlmtune data check`) or set data.strict: false.")
        by_total = self.total is not None and self.count > self.max_bad_fraction * self.total
        by_seen = seen >= self.min_seen and self.count / max(seen, 1) > self.max_bad_fraction
        if by_total or by_seen:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items()))
            raise VlmtuneError(f"{self.count} of {seen} samples seen were skipped ({reasons}), more than "
                               f"data.max_bad_fraction={self.max_bad_fraction}.{log} Run `vlmtune data check` on the data, "
                               "or raise data.max_bad_fraction.")
