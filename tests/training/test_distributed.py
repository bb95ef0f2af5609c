"""2 processes over gloo on this CPU with --deepspeed zero2 / zero3 (real DeepSpeed engines, CPU accelerator) and
--fsdp (FSDP needs GPUs in accelerate; on a CPU it runs as plain DDP, and vlmtune says so) give the same per-step
losses as one process with the same global batch, and the saved adapter (projector inside, gathered whole) loads
with stock peft.

Tolerance: DDP reproduces the 1-process losses to float noise (1e-4); DeepSpeed's ZeRO optimizer updates flat fp32
partitions, a different reduction order, and stays within 1e-3 of them over these steps."""

from __future__ import annotations

import pytest
import torch

from training_helpers import QUIET, load_adapter, read_metrics, run_vlmtune, train_cli, vlm_config, write_yaml

STEPS = 3


@pytest.fixture(scope="module")
def one_process(tiny_vlm, digits, tmp_path_factory):
    """The reference: 1 process, batch 4 (the global batch of 2 processes x 2)."""
    root = tmp_path_factory.mktemp("dist")
    cfg = vlm_config(tiny_vlm, digits, root / "ref", projector="full", llm="lora")
    cfg["train"].update(max_steps=STEPS, batch_size=4, lr=1e-3)
    path = write_yaml(root / "cfg.yaml", cfg)
    assert train_cli(path) == 0
    return root, path


@pytest.mark.slow
@pytest.mark.parametrize("engine", [["--deepspeed", "zero2"], ["--deepspeed", "zero3"], ["--fsdp"]], ids=lambda e: e[-1].strip("-"))
def test_two_processes_match_one(engine, one_process, tiny_vlm):
    root, cfg = one_process
    run = root / engine[-1].strip("-")
    proc = run_vlmtune("train", str(cfg), f"output_dir={run}", "train.batch_size=2", *QUIET, "--nproc", "2", *engine)
    assert proc.returncode == 0, proc.stderr[-3000:]
    deepspeed = engine[0] == "--deepspeed"
    if not torch.cuda.is_available() and not deepspeed:
        assert "running plain DDP over gloo instead" in proc.stderr
    tol = 1e-3 if deepspeed else 1e-4
    ref = [r["loss"] for r in read_metrics(root / "ref")]
    got = [r["loss"] for r in read_metrics(run)]
    assert len(ref) == len(got) == STEPS
    assert got == pytest.approx(ref, abs=tol)
    model = load_adapter(tiny_vlm, run / "final")
    params = dict(model.named_parameters())
    assert any("multi_modal_projector.modules_to_save" in n for n in params)
    assert all(p.abs().max() > 0 for n, p in params.items() if "language_model" in n and "lora_B" in n)
    # the 2-process adapter is the 1-process one (within float noise of a different reduction order)
    ref_model = load_adapter(tiny_vlm, root / "ref" / "final")
    for n, p in ref_model.named_parameters():
        if "lora_B" in n or "modules_to_save" in n:
            torch.testing.assert_close(params[n], p, atol=10 * tol, rtol=1e-2)
