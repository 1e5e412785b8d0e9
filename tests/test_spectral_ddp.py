"""DDP with the spectral gradient filter: 2 gloo CPU processes must stay identical.

Each rank sees different data; DDP all-reduces the gradients during backward(), the filter
then runs on identical gradients with an identically built graph, so the parameters of both
ranks must agree bit for bit after every step — and differ from an unfiltered run.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from graphopt.peft.param_graph import build_parameter_graph
from graphopt.peft.spectral_filter import SpectralGradientFilter
from graphopt.peft.spectral_reg import SpectralRegularizer

STEPS = 6


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for use_filter in (True, False):
            _train(rank, out_dir, use_filter)
    finally:
        dist.destroy_process_group()


def _train(rank: int, out_dir: str, use_filter: bool) -> None:
    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    graph = build_parameter_graph(model, nodes="rows", k=3)
    filt = SpectralGradientFilter(graph, "heat:t=1.5", beta=0.8)
    reg = SpectralRegularizer(graph, 0.5)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for _ in range(STEPS):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        loss = nn.functional.cross_entropy(ddp(x), y) + reg()
        opt.zero_grad()
        loss.backward()
        if use_filter:
            filt()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(flat, os.path.join(out_dir, f"rank{rank}-{int(use_filter)}.pt"))


def _run() -> dict[bool, list[torch.Tensor]]:
    # fork: the workers inherit the imported modules (spawn would re-import torch and
    # graphopt in each process, which dominates the runtime on a small machine).
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(2, init_file, tmp), nprocs=2, join=True, start_method=method)
        return {f: [torch.load(os.path.join(tmp, f"rank{r}-{int(f)}.pt")) for r in range(2)]
                for f in (True, False)}


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_ranks_stay_identical_with_the_filter():
    runs = _run()
    filtered, plain = runs[True], runs[False]
    assert torch.equal(filtered[0], filtered[1])
    assert torch.equal(plain[0], plain[1])
    assert not torch.equal(filtered[0], plain[0])
