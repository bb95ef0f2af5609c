"""Checkpoints that always resume: no pickles, written atomically, complete only once marked.

    RUN/checkpoints/step-N/
        model.safetensors       trainable weights (LoRA, projector, any fully-trained part)
        optimizer.safetensors   optimizer tensors; optimizer.json holds the rest of its state
        rng.safetensors         torch (and CUDA) RNG states
        trainer_state.json      step, data position, scheduler, python/numpy RNG, data fingerprint
        config.yaml             the resolved config
        COMPLETE                written last; a folder without it is ignored (and cleaned up)

A checkpoint is written into `.tmp-step-N`, every file fsynced, the marker written, then renamed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlmtune.errors import VlmtuneError

MARKER = "COMPLETE"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, state, gauss = plain["python"]
    random.setstate((v, tuple(state), gauss))
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def optimizer_to_files(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split torch's optimizer state_dict into safetensors-able tensors and JSON."""
    tensors, plain_state = {}, {}
    for idx, entry in opt_state["state"].items():
        plain_state[str(idx)] = {}
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                plain_state[str(idx)][k] = v
    groups = [{k: v for k, v in g.items() if k != "names"} for g in opt_state["param_groups"]]
    return tensors, {"state": plain_state, "param_groups": groups}


def optimizer_from_files(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in plain["state"].items()}
    for key, t in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = t
    return {"state": state, "param_groups": plain["param_groups"]}


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / MARKER).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_checkpoint(run_dir: Path, step: int, *, weights: dict[str, torch.Tensor], optimizer_state: dict | None,
                    trainer_state: dict, config_yaml: str, keep: int = 0, protect: Path | None = None,
                    extra: Callable[[Path], None] | None = None) -> Path:
    """`extra(folder)` adds more files (an exported adapter, an engine's state) before the marker."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    if optimizer_state is not None:
        opt_tensors, opt_plain = optimizer_to_files(optimizer_state)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        _write_text(tmp / "optimizer.json", json.dumps(opt_plain))
    rng_tensors, rng_plain = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    _write_text(tmp / "trainer_state.json", json.dumps({**trainer_state, "rng": rng_plain}, indent=1))
    _write_text(tmp / "config.yaml", config_yaml)
    if extra is not None:
        extra(tmp)
    for f in tmp.rglob("*"):
        if f.is_file():
            _fsync_path(f)
    _write_text(tmp / MARKER, f"step {step}\n")
    if final.exists():  # an older save of the same step (e.g. a stop right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_path(root)
    prune_checkpoints(run_dir, keep, protect)
    return final


def prune_checkpoints(run_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Keep the newest `keep` complete checkpoints (0 = all); never delete `protect`; drop unfinished temp folders."""
    root = Path(run_dir) / "checkpoints"
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep <= 0:
        return
    ckpts = complete_checkpoints(run_dir)
    for old in ckpts[:-keep]:
        if protect is not None and old.resolve() == Path(protect).resolve():
            continue
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not (path / MARKER).is_file():
        raise VlmtuneError(f"{path} is not a complete checkpoint (no {MARKER} marker).")
    out = {"weights": load_file(str(path / "model.safetensors")),
           "trainer_state": json.loads((path / "trainer_state.json").read_text())}
    if (path / "optimizer.safetensors").is_file():
        out["optimizer_state"] = optimizer_from_files(load_file(str(path / "optimizer.safetensors")),
                                                      json.loads((path / "optimizer.json").read_text()))
    out["rng_tensors"] = load_file(str(path / "rng.safetensors"))
    return out
