"""Keeping the allocation identical across data-parallel ranks (torchrun / accelerate, DDP).

Each rank scores the nodes on its own batches. Before the covariance is formed the (T × n)
sample matrices are averaged over ranks, X ← (1/W) Σ_w X_w (one all-reduce at selection
time, not one per step: the mean of per-step samples is the same either way). Every rank
then runs the same deterministic pipeline on the same X; as a guard against floating-point
differences between machines, rank 0's selection is broadcast and used everywhere.
Without an initialised process group every function is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "average_samples", "broadcast_selection", "world_size"]


def is_distributed() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _comm_device(t: torch.Tensor) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors (and CUDA ones via a copy).
    if is_distributed() and dist.get_backend() == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def average_samples(samples: torch.Tensor) -> torch.Tensor:
    """X averaged over ranks (mean all-reduce); ValueError if ranks scored different T × n."""
    if not is_distributed() or world_size() == 1:
        return samples
    device = _comm_device(samples)
    shape = torch.tensor([samples.shape[0], -samples.shape[0], samples.shape[1],
                          -samples.shape[1]], dtype=torch.float64, device=device)
    dist.all_reduce(shape, op=dist.ReduceOp.MAX)
    if shape[0] != -shape[1] or shape[2] != -shape[3]:
        raise ValueError("ranks collected score matrices of different shapes (T, n): "
                         f"T in [{-shape[1]:.0f}, {shape[0]:.0f}], n in [{-shape[3]:.0f}, "
                         f"{shape[2]:.0f}]; every rank must run the same number of steps")
    total = samples.to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total / world_size()).to(samples.device)


def broadcast_selection(selected: Sequence[int], device: torch.device | str = "cpu") -> list[int]:
    """Rank 0's selected node indices on every rank (identity without a process group)."""
    if not is_distributed() or world_size() == 1:
        return list(selected)
    t = torch.as_tensor(list(selected), dtype=torch.long)
    t = t.to(_comm_device(t.to(device)))
    size = torch.tensor([t.numel()], dtype=torch.long, device=t.device)
    dist.broadcast(size, src=0)
    if int(size) != t.numel():
        t = torch.zeros(int(size), dtype=torch.long, device=t.device)
    dist.broadcast(t, src=0)
    return [int(i) for i in t.cpu().tolist()]
