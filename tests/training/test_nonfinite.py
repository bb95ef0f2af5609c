"""A non-finite loss skips the update and is logged; K in a row stop the run with a message and leave the last
complete checkpoint intact. A batch with no trained tokens never yields NaN."""

from __future__ import annotations

import math

import torch
from safetensors.torch import load_file

from training_helpers import read_metrics, train_cli, vlm_config, write_yaml


def test_nan_skips_then_stops_with_checkpoint_intact(tiny_vlm, digits, tmp_path, monkeypatch, capsys):
    import vlmtune.training.loop as loop

    real, calls = loop.micro_step_loss, {"n": 0}

    def poisoned(*a, **k):  # steps 1-2 are fine, then every loss is NaN
        calls["n"] += 1
        loss, summed = real(*a, **k)
        return (loss * float("nan"), summed * float("nan")) if calls["n"] > 2 else (loss, summed)

    monkeypatch.setattr(loop, "micro_step_loss", poisoned)
    run = tmp_path / "run"
    cfg = vlm_config(tiny_vlm, digits, run)
    cfg["train"].update(max_steps=10, save_steps=2, max_nonfinite=3)
    assert train_cli(write_yaml(tmp_path / "cfg.yaml", cfg)) == 2
    captured = capsys.readouterr()
    assert "3 non-finite updates in a row at step 5; stopping" in captured.err
    assert "update skipped" in captured.out and "Traceback" not in captured.err

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [bool(r.get("skipped_update")) for r in rows] == [False, False, True, True, True]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step-2", "step-4"]  # step 4's save came after two skipped updates: same weights as step 2
    w2 = load_file(str(run / "checkpoints" / "step-2" / "model.safetensors"))
    w4 = load_file(str(run / "checkpoints" / "step-4" / "model.safetensors"))
    for k in w2:
        assert torch.isfinite(w4[k]).all() and torch.equal(w2[k], w4[k]), k
    assert (run / "checkpoints" / "step-4" / "COMPLETE").is_file()
    assert (run / "loss.png").is_file() and not (run / "final").exists()


def test_batch_without_trained_tokens_is_not_nan(tiny_vlm):
    from accelerate import Accelerator
    from transformers import AutoModelForImageTextToText

    from vlmtune.training.loop import micro_step_loss

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    ids = torch.tensor([[1, 20, 21, 22, 2]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100), "num_samples": 1}
    loss, summed = micro_step_loss(model, batch, Accelerator(cpu=True), n_tokens_global=0, world=1, grad_accum=1)
    assert math.isfinite(float(loss)) and float(loss) == 0.0 and math.isfinite(float(summed))
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    empty = {"input_ids": ids[:0], "attention_mask": ids[:0], "labels": ids[:0], "num_samples": 0}
    loss, _ = micro_step_loss(model, empty, Accelerator(cpu=True), n_tokens_global=0, world=1, grad_accum=1)
    assert float(loss) == 0.0
