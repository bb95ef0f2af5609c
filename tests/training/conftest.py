"""Tiny model parts, a tiny composed VLM and a small digit dataset, built once per session.

Helpers drive the public entry points: `vlmtune.cli.main(["train", ...])` in-process, or the
`vlmtune` console script in a subprocess where a real process (signals, --nproc) is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from vlmtune.models.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def tiny_parts(tiny_vlm) -> dict[str, Path]:
    """The separate CLIP and Llama checkpoints the tiny VLM was composed from."""
    parts = tiny_vlm.parent / (tiny_vlm.name + "-parts")
    return {"vision": parts / "tiny-clip", "llm": parts / "tiny-llama"}


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict[str, Path]:
    """64 training and 16 eval records of the demo's digit task, with their images."""
    from vlmtune.demo_data import build_digit_data

    root = tmp_path_factory.mktemp("digits")
    paths = build_digit_data(root)
    train = json.loads(Path(paths["identify_train"]).read_text())[:64]
    evals = json.loads(Path(paths["identify_eval"]).read_text())[:16]
    (root / "train64.json").write_text(json.dumps(train))
    (root / "eval16.json").write_text(json.dumps(evals))
    return {"train": root / "train64.json", "eval": root / "eval16.json", "images": paths["images"]}
