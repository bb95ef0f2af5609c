"""Deterministic data order that resumes from a step number alone.

Epoch e uses the permutation drawn from (seed, e). Optimizer step s (0-based) takes the global batch
`perm[k*G : (k+1)*G]` with k = s mod steps_per_epoch and G = batch_size * grad_accum * world_size;
rank r's micro-batch m is the slice `[(m*world + r)*batch_size : ... + batch_size]` of it. So the
global batch of a step is the same set of samples whatever the number of processes.
"""

from __future__ import annotations

import torch

from vlmtune.errors import VlmtuneError


class StepSampler:
    def __init__(self, n: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int, shuffle: bool = True):
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self.world, self.rank, self.seed, self.shuffle = world, rank, seed, shuffle
        self.global_batch = batch_size * grad_accum * world
        if n < self.global_batch:
            raise VlmtuneError(f"the data has {n} usable samples, fewer than one global batch "
                               f"(train.batch_size {batch_size} x train.grad_accum {grad_accum} x {world} processes = "
                               f"{self.global_batch}); lower train.batch_size or train.grad_accum.")
        self.steps_per_epoch = n // self.global_batch
        self.dropped = n - self.steps_per_epoch * self.global_batch
        self._perm_epoch, self._perm = None, None

    def permutation(self, epoch: int) -> list[int]:
        if self._perm_epoch != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perm = list(range(self.n))
            self._perm_epoch = epoch
        return self._perm

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's `grad_accum` micro-batches (dataset indices) for optimizer step `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = self.permutation(epoch)
        chunk = perm[k * self.global_batch:(k + 1) * self.global_batch]
        out = []
        for m in range(self.grad_accum):
            start = (m * self.world + self.rank) * self.batch_size
            out.append(chunk[start:start + self.batch_size])
        return out

    def batches(self, start_step: int, total_steps: int):
        """A batch_sampler for DataLoader: micro-batches from `start_step` to `total_steps`."""
        sampler = self

        class _Batches:
            def __iter__(self):
                for s in range(start_step, total_steps):
                    yield from sampler.micro_batches(s)

            def __len__(self):
                return (total_steps - start_step) * sampler.grad_accum

        return _Batches()
