"""Pieces of the training loop: the token-weighted loss, eval loss, a stop flag for signals, progress."""

from __future__ import annotations

import signal
import sys

import torch
import torch.nn.functional as F


def token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over trained positions, and their count."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "pixel_values" in batch:
        inputs["pixel_values"] = batch["pixel_values"]
    logits = model(**inputs, use_cache=False).logits  # (B, T, V)
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
    return loss, int((labels != -100).sum())


def _to_device(batch: dict, device, dtype=None) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device)
            if k == "pixel_values" and dtype is not None:
                v = v.to(dtype)
        out[k] = v
    return out


def _pixel_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _dummy_batch(device) -> dict:
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}


def micro_step_loss(model, batch: dict, accelerator, n_tokens_global: int, world: int, grad_accum: int):
    """The loss to backpropagate for one micro-batch, weighted so the optimizer step averages over every
    trained token of the whole global batch (not a mean of per-batch means).

    accelerate/DeepSpeed divide by grad_accum and DDP averages over processes, hence the scale back.
    An empty micro-batch (all samples skipped) still runs a zero-weighted forward, so that every
    process takes part in the same collectives under ZeRO-3/FSDP.
    """
    if batch["num_samples"] == 0:
        loss_sum, _ = token_loss_sum(model, _dummy_batch(accelerator.device))
        zero = loss_sum * 0.0
        return zero, zero.detach()
    batch = _to_device(batch, accelerator.device, _pixel_dtype(model))
    loss_sum, _ = token_loss_sum(model, batch)
    scale = world * grad_accum / max(n_tokens_global, 1)
    return loss_sum * scale, loss_sum.detach()


@torch.no_grad()
def run_eval_loss(model, dataset, accelerator, pad_token_id: int, batch_size: int) -> float:
    """Token-averaged loss over the eval set (each process takes a strided share)."""
    from vlmtune.data.dataset import collate

    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    indices = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    # Every process runs the same number of forwards (ZeRO-3 gathers weights collectively).
    per_rank = -(-len(dataset) // accelerator.num_processes)
    for start in range(0, per_rank, batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]], pad_token_id)
        if batch["num_samples"] == 0:
            token_loss_sum(model, _dummy_batch(accelerator.device))
            continue
        loss_sum, n = token_loss_sum(model, _to_device(batch, accelerator.device, _pixel_dtype(model)))
        total += loss_sum.float()
        count += n
    if was_training:
        model.train()
    total = accelerator.reduce(total, "sum")
    count = accelerator.reduce(count, "sum")
    return float(total / count.clamp(min=1))


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self):
        self.name = None
        self._old = {}

    @classmethod
    def install(cls) -> "StopFlag":
        flag = cls()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                flag._old[sig] = signal.signal(sig, flag._handle)
            except ValueError:  # not the main thread
                pass
        return flag

    def _handle(self, signum, frame) -> None:
        self.name = signal.Signals(signum).name

    def requested(self, accelerator) -> bool:
        local = torch.tensor(1.0 if self.name else 0.0, device=accelerator.device)
        if accelerator.num_processes > 1:
            local = accelerator.reduce(local, "max")
        if float(local) > 0 and self.name is None:
            self.name = "SIGTERM"
        return float(local) > 0

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Progress:
    """A tqdm bar with loss, lr, samples/s and ETA (tqdm computes the ETA)."""

    def __init__(self, enabled: bool, start: int, total: int, main: bool = True):
        self.bar = None
        self.enabled_plain = main
        self.extra: dict[str, str] = {}  # latest eval figures, kept beside the loss in the bar
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, row: dict) -> None:
        if self.bar is None:
            return
        post = {}
        if row.get("loss") is not None:
            post["loss"] = f"{row['loss']:.4f}"
        post["lr"] = f"{row['lr']:.2e}"
        post["samples/s"] = f"{row['samples_per_s']:.1f}"
        post.update(self.extra)
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def show(self, values: dict) -> None:
        self.extra.update({k.split("/")[-1]: f"{v:.3f}" for k, v in values.items()})

    def note(self, text: str) -> None:
        """A line above the bar (or plain, when there is no bar): eval results and sample answers."""
        if self.bar is not None:
            self.bar.write(text)
        elif self.enabled_plain:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
