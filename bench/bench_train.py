"""Training throughput: vlmtune's loop vs. transformers.Trainer (the peer), same model, data and batch.

    .venv/bin/python bench/bench_train.py [--steps 40] [--batch-size 16]

Both train the same tiny composed LLaVA (full fine-tune, fp32, CPU) on the demo's digit data with the
same tokenised samples (vlmtune's SupervisedDataset + collate), so the table measures the loop,
not the data. Prints samples/s and the final loss of each, in one run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def vlmtune_run(root: Path, data: dict, parts: dict, steps: int, batch: int) -> tuple[float, float]:
    from vlmtune.config import from_dict
    from vlmtune.recipes.train import train

    cfg = from_dict({
        "output_dir": str(root / "vlmtune"),
        "model": {"vision_encoder": str(parts["vision"]), "language_model": str(parts["llm"]),
                  "vision": "full", "projector": "full", "llm": "full"},
        "data": {"path": str(data["identify_train"]), "image_folder": str(data["images"]), "max_length": 256},
        "train": {"max_steps": steps, "batch_size": batch, "lr": 1e-3, "warmup_ratio": 0.0, "save_steps": 0,
                  "report_to": ["none"], "progress": False, "max_grad_norm": 1.0},
    }).validate()
    train(cfg)
    rows = [json.loads(line) for line in (root / "vlmtune" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("loss") is not None]
    # Time in the loop only (data + step), as trainer.train() is timed below: not loading or saving.
    dt = sum(batch / r["samples_per_s"] for r in rows)
    return steps * batch / dt, rows[-1]["loss"]


def trainer_run(root: Path, data: dict, parts: dict, steps: int, batch: int) -> tuple[float, float]:
    import torch
    from transformers import Trainer, TrainingArguments

    from vlmtune.data.dataset import SupervisedDataset, collate
    from vlmtune.data.readers import load_samples
    from vlmtune.data.templates import get_template
    from vlmtune.models.compose import compose_llava
    from vlmtune.models.processing import image_seq_len_of

    torch.manual_seed(42)
    model, processor = compose_llava(str(parts["vision"]), str(parts["llm"]))
    samples, _ = load_samples(str(data["identify_train"]))
    ds = SupervisedDataset(samples, tokenizer=processor.tokenizer, template=get_template("vicuna_v1"),
                           image_processor=processor.image_processor, image_folder=str(data["images"]),
                           image_seq_len=image_seq_len_of(model.config, processor), max_length=256)

    def hf_collate(batch_items):
        out = collate(batch_items, processor.tokenizer.pad_token_id)
        return {k: out[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values") if k in out}

    args = TrainingArguments(output_dir=str(root / "trainer"), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=1e-3, warmup_steps=0, lr_scheduler_type="cosine", logging_steps=1,
                             save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
                             dataloader_num_workers=0, remove_unused_columns=False, max_grad_norm=1.0, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=hf_collate)
    t = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return steps * batch / dt, losses[-1]


def main() -> None:
    from transformers.utils import logging as hf_logging

    from vlmtune.demo_data import build_digit_data
    from vlmtune.models.tiny import build_tiny_parts

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = Path(tempfile.mkdtemp(prefix="vlmtune-bench-"))
    try:
        data = build_digit_data(root / "data")
        parts = build_tiny_parts(root / "parts")
        results = {"vlmtune": vlmtune_run(root, data, parts, args.steps, args.batch_size),
                   "transformers.Trainer": trainer_run(root, data, parts, args.steps, args.batch_size)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ntiny LLaVA full fine-tune, CPU fp32, {args.steps} steps x batch {args.batch_size}")
    print(f"{'loop':<22} {'samples/s':>10} {'last loss':>10}")
    for name, (sps, loss) in results.items():
        print(f"{name:<22} {sps:>10.1f} {loss:>10.4f}")


if __name__ == "__main__":
    main()
