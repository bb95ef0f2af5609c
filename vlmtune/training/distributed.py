"""One process or many, through accelerate (DDP / FSDP) and DeepSpeed; never a home-made engine.

`--nproc N` re-runs the same command under `torch.distributed.run`; under an outside launcher
(torchrun, accelerate launch, deepspeed) the rank comes from the environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import torch

from vlmtune.config import TrainConfig
from vlmtune.errors import ConfigError

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")


def deepspeed_config(spec: str, tcfg: TrainConfig, precision: str, world_size: int) -> dict:
    """A preset (LLaVA's zero2/zero3/zero3_offload) or a user JSON, with every "auto" filled in."""
    if spec in DEEPSPEED_PRESETS:
        text = resources.files("vlmtune.training").joinpath("deepspeed", f"{spec}.json").read_text()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--deepspeed {spec}: not a preset ({', '.join(DEEPSPEED_PRESETS)}) nor an existing JSON file.")
        text = path.read_text()
    try:
        ds = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--deepspeed {spec}: not valid JSON: {e}") from None
    fills = {
        "train_micro_batch_size_per_gpu": tcfg.batch_size,
        "gradient_accumulation_steps": tcfg.grad_accum,
        "train_batch_size": tcfg.batch_size * tcfg.grad_accum * world_size,
        "gradient_clipping": tcfg.max_grad_norm or 0.0,
    }
    for key, value in fills.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds.setdefault("gradient_clipping", tcfg.max_grad_norm or 0.0)
    for key, on in (("bf16", precision == "bf16"), ("fp16", precision == "fp16")):
        if key in ds and ds[key].get("enabled") == "auto":
            ds[key]["enabled"] = on
    zero = ds.get("zero_optimization", {})
    for key, value in (("reduce_bucket_size", 5e8), ("stage3_prefetch_bucket_size", 5e8),
                       ("stage3_param_persistence_threshold", 1e5)):
        if zero.get(key) == "auto":
            zero[key] = value
    if not torch.cuda.is_available():
        for k in ("offload_optimizer", "offload_param"):  # pinned memory needs a GPU
            if isinstance(zero.get(k), dict):
                zero[k]["pin_memory"] = False
    ds["steps_per_print"] = ds.get("steps_per_print", 1e9)
    return ds


def build_accelerator(tcfg: TrainConfig, precision: str, *, deepspeed: str | None = None, fsdp: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    world = int(os.environ.get("WORLD_SIZE", "1"))
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
    kwargs = {}
    if deepspeed:
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(deepspeed, tcfg, precision, world))
    cpu = not torch.cuda.is_available()
    if (fsdp or deepspeed) and cpu:
        # With cpu=True accelerate enables neither FSDP nor DeepSpeed; it runs DDP. Say so rather than pretend.
        if int(os.environ.get("RANK", "0")) == 0:
            what = "--fsdp" if fsdp else f"--deepspeed {deepspeed}"
            print(f"note: {what} needs GPUs here (accelerate uses neither FSDP nor DeepSpeed on CPU); "
                  "running plain DDP over gloo instead.", file=sys.stderr)
    elif fsdp:
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    return Accelerator(mixed_precision=mixed, cpu=cpu, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str]) -> int:
    """Run `vlmtune train ...` in N local processes with torch.distributed.run; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", "-m", "vlmtune", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nproc)))
    return subprocess.call(cmd, env=env)
