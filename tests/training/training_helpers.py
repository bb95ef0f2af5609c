"""Helpers for the training tests (a uniquely named module, so it never collides with other test folders' helpers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

VENV_BIN = Path(sys.executable).parent
QUIET = ["train.report_to=none", "train.progress=false"]
# The last CLIP layer and its post-layernorm feed nothing when vision_feature_layer = -2 (as in LLaVA),
# so they get no gradient even when the vision tower trains.
UNUSED_VISION = ("model.vision_tower.encoder.layers.1.", "model.vision_tower.post_layernorm.",
                 "model.vision_tower.vision_model.encoder.layers.1.", "model.vision_tower.vision_model.post_layernorm.")


def vlm_config(tiny_vlm: Path, digits: dict, out: Path, **modes) -> dict:
    """A 2-step config on the tiny VLM; `modes` overrides model.vision / projector / llm."""
    return {
        "output_dir": str(out),
        "model": {"path": str(tiny_vlm), "vision": "frozen", "projector": "full", "llm": "lora", **modes},
        "data": {"path": str(digits["train"]), "image_folder": str(digits["images"]), "max_length": 128},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0, "save_steps": 0, "seed": 0},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    }


def write_yaml(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_cli(config: Path | str, *overrides: str, quiet: bool = True) -> int:
    """`vlmtune train CONFIG overrides...` in this process; returns the exit code."""
    from vlmtune.cli import main

    return main(["train", str(config), *(QUIET if quiet else []), *overrides])


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    return env


def vlmtune_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "vlmtune"), *args]


def run_vlmtune(*args: str, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run(vlmtune_cmd(*args), capture_output=True, text=True, timeout=timeout, env=subprocess_env(**env))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def base_state(path: Path) -> dict:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_adapter(base: Path, final: Path):
    """The saved adapter, loaded with stock transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    return PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), final)
