"""Checkpoints and resume: SIGKILL mid-run then resume gives the weights of a straight run; SIGTERM saves
then exits; save_total_limit keeps the newest and never the resumed one; a changed dataset is refused;
a half-written checkpoint is ignored."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_helpers import QUIET, subprocess_env, train_cli, vlm_config, vlmtune_cmd, write_yaml

N = 3

# Loaded at interpreter start in the subprocess (PYTHONPATH): makes the run pause where the test wants to
# send its signal, so the kill lands mid-run every time instead of racing a fast tiny model.
SITECUSTOMIZE = '''
import os, time
if os.environ.get("VT_HANG_AFTER_SAVE"):
    import vlmtune.training.checkpoint as ckpt
    _save = ckpt.save_checkpoint
    def save_checkpoint(*a, **k):
        path = _save(*a, **k)
        time.sleep(600)  # the test SIGKILLs us here, after step-N/COMPLETE exists
        return path
    ckpt.save_checkpoint = save_checkpoint
if os.environ.get("VT_SLOW_STEP"):
    import vlmtune.training.loop as loop
    _micro = loop.micro_step_loss
    def micro_step_loss(*a, **k):
        time.sleep(float(os.environ["VT_SLOW_STEP"]))
        return _micro(*a, **k)
    loop.micro_step_loss = micro_step_loss
'''


def _hooks(tmp_path: Path) -> str:
    d = tmp_path / "hooks"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return str(d)


def _wait_for(pred, proc, timeout=120):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.1)


def _trainable(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "adapter_model.safetensors"))


@pytest.fixture
def resume_cfg(tiny_vlm, digits, tmp_path):
    cfg = vlm_config(tiny_vlm, digits, tmp_path / "run", vision="lora", projector="full", llm="lora")
    cfg["train"].update(max_steps=2 * N, save_steps=N, warmup_ratio=0.2)
    cfg["lora"]["dropout"] = 0.1  # so the RNG state has to come back for the weights to match
    return cfg


def test_sigkill_then_resume_matches_straight_run(resume_cfg, tmp_path):
    straight = dict(resume_cfg, output_dir=str(tmp_path / "straight"))
    assert train_cli(write_yaml(tmp_path / "straight.yaml", straight)) == 0

    run = Path(resume_cfg["output_dir"])
    cfg = write_yaml(tmp_path / "run.yaml", resume_cfg)
    cmd = vlmtune_cmd("train", str(cfg), *QUIET)
    env = subprocess_env(PYTHONPATH=_hooks(tmp_path), VT_HANG_AFTER_SAVE="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(lambda: (run / "checkpoints" / f"step-{N}" / "COMPLETE").is_file(), proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "final").exists()

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Resuming from {run / 'checkpoints' / f'step-{N}'}" in proc.stdout
    a, b = _trainable(tmp_path / "straight"), _trainable(run)
    assert a.keys() == b.keys() and any("lora_B" in k for k in a) and any("multi_modal_projector" in k for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 2 * N + 1))  # nothing logged twice, nothing missing


def test_sigterm_saves_a_checkpoint_then_exits(resume_cfg, tmp_path):
    run = Path(resume_cfg["output_dir"])
    cfg = write_yaml(tmp_path / "run.yaml", {**resume_cfg, "train": {**resume_cfg["train"], "max_steps": 50, "save_steps": 0}})
    env = subprocess_env(PYTHONPATH=_hooks(tmp_path), VT_SLOW_STEP="0.3")
    proc = subprocess.Popen(vlmtune_cmd("train", str(cfg), *QUIET), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    _wait_for(lambda: (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "COMPLETE").is_file()
    assert "Stopping on SIGTERM" in out and f"vlmtune train {run}" in out
    assert (run / "loss.png").is_file() and not (run / "final").exists()


def test_save_total_limit_half_written_and_changed_data(resume_cfg, digits, tmp_path, capsys):
    run = Path(resume_cfg["output_dir"])
    cfg = write_yaml(tmp_path / "run.yaml", {**resume_cfg, "train": {**resume_cfg["train"], "max_steps": 2, "save_steps": 1,
                                                                      "save_total_limit": 0}})
    assert train_cli(cfg) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1", "step-2"]

    # A half-written checkpoint (no COMPLETE marker) newer than the others is ignored.
    torn = run / "checkpoints" / "step-9"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"torn")
    capsys.readouterr()
    # Resume from step-2 with save_total_limit=1: only the newest is kept, but never the one resumed from.
    assert train_cli(run, "train.max_steps=5", "train.save_total_limit=1") == 0
    assert f"Resuming from {run / 'checkpoints' / 'step-2'}" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "COMPLETE").is_file()) == ["step-2", "step-5"]

    # Changed data: refused (exit 2, says how to override), then accepted with train.allow_data_change=true.
    data = Path(json.loads(json.dumps(resume_cfg["data"]["path"])))
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(json.loads(data.read_text())[:-4]))
    capsys.readouterr()
    assert train_cli(run, f"data.path={changed}", "train.max_steps=6") == 2
    err = capsys.readouterr().err
    assert "data changed" in err and "train.allow_data_change=true" in err and "Traceback" not in err
    assert train_cli(run, f"data.path={changed}", "train.max_steps=6", "train.allow_data_change=true") == 0
    assert "Resuming from" in capsys.readouterr().out
