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
    """An `accelerate.Accelerator`, or for `--deepspeed` a `DeepSpeedRunner` with the same surface.

    DeepSpeed goes through `deepspeed.initialize` directly: accelerate enables DeepSpeed only on
    GPUs, while DeepSpeed itself also runs on CPUs (over gloo), which is how it is tested here.
    """
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    if deepspeed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return DeepSpeedRunner(deepspeed_config(deepspeed, tcfg, precision, world))
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
    cpu = not torch.cuda.is_available()
    kwargs = {}
    if fsdp and cpu:
        # accelerate's FSDP needs GPUs; on CPU the same command runs DDP over gloo. Say so rather than pretend.
        if int(os.environ.get("RANK", "0")) == 0:
            print("note: --fsdp needs GPUs (accelerate runs FSDP only there); running plain DDP over gloo instead.",
                  file=sys.stderr)
    elif fsdp:
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    return Accelerator(mixed_precision=mixed, cpu=cpu, **kwargs)


class _DistributedType:
    name = "DEEPSPEED"


class DeepSpeedRunner:
    """The part of accelerate's `Accelerator` surface the training recipe uses, over a DeepSpeed engine.

    DeepSpeed owns the optimizer step, gradient accumulation boundaries, clipping (`gradient_clipping`)
    and, under ZeRO-3, parameter partitioning; `backward` runs `engine.backward` + `engine.step` as
    accelerate does for DeepSpeed.
    """

    distributed_type = _DistributedType()

    def __init__(self, ds_config: dict):
        import deepspeed

        self.ds_config = ds_config
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.num_processes = torch.distributed.get_world_size()
        self.process_index = torch.distributed.get_rank()
        self.is_main_process = self.process_index == 0
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        self.engine = None
        self.sync_gradients = True

    def prepare(self, model, optimizer):
        import deepspeed

        self.engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.ds_config)
        return self.engine, _StepOwnedByEngine(optimizer)

    def accumulate(self, model):
        import contextlib

        return contextlib.nullcontext()

    def backward(self, loss) -> None:
        self.engine.backward(loss)
        self.sync_gradients = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()

    def clip_grad_norm_(self, parameters, max_norm):
        return None  # DeepSpeed clips (config `gradient_clipping`); the norm comes from get_global_grad_norm

    def reduce(self, tensor, op: str = "sum"):
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX)
        return tensor

    def wait_for_everyone(self) -> None:
        torch.distributed.barrier()

    def unwrap_model(self, model):
        return getattr(model, "module", model)

    def get_state_dict(self, model) -> dict:
        """Whole weights on rank 0 (ZeRO-3 partitions gathered); collective."""
        if self.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict() or {}
        return {k: v.detach().cpu() for k, v in self.engine.module.state_dict().items()}

    def save_state(self, path: str) -> None:
        self.engine.save_checkpoint(path, tag="engine")

    def load_state(self, path: str) -> None:
        self.engine.load_checkpoint(path, tag="engine", load_module_strict=False)


class _StepOwnedByEngine:
    """DeepSpeed steps and zeroes inside `engine.step()`; the recipe's calls are no-ops here."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self) -> None:
        pass

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def state_dict(self):
        return self.optimizer.state_dict()


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
