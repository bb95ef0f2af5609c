"""Tiny models and run folders for the export tests, built once per session.

The LoRA run folder is written with peft directly, in the layout the trainer writes:
RUN/config.yaml, RUN/final/ = adapter (LoRA on LLM + vision linears, projector in modules_to_save)
+ processor files + vlmtune_run.json.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from export_helpers import write_lora_run


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from vlmtune.models.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def lora_run(tiny_vlm, tmp_path_factory) -> Path:
    return write_lora_run(tiny_vlm, tmp_path_factory.mktemp("runs") / "lora-run")


@pytest.fixture(scope="session")
def probe_image():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")
