"""GPU-only checks (skipped without CUDA): bf16 training and QLoRA on a GPU, through `vlmtune train`."""

from __future__ import annotations

import math

import pytest
import torch

from training_helpers import read_metrics, train_cli, vlm_config, write_yaml

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_bf16_training_on_gpu(tmp_path, tiny_vlm, digits, quantization):
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run")
    cfg["train"]["precision"] = "bf16"
    cfg["model"]["quantization"] = quantization
    assert train_cli(write_yaml(tmp_path / "c.yaml", cfg)) == 0
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
