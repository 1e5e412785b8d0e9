"""Two CPU ranks (gloo, DDP): scores are averaged, both ranks freeze the same nodes, training goes on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from graphopt.peft.distributed import average_samples, broadcast_selection, is_distributed  # noqa: E402

WORKER = textwrap.dedent("""
    import hashlib, json, os, sys, warnings
    import torch, torch.distributed as dist, transformers
    from torch.nn.parallel import DistributedDataParallel as DDP
    from graphopt.peft.config import GGMConfig
    from graphopt.peft.model import get_graphopt_model
    from graphopt.peft.allocator import GGMAllocator
    from graphopt.peft.distributed import average_samples, broadcast_selection

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    # the averaging primitive itself: rank-specific matrices -> their mean on every rank
    mine = torch.full((3, 4), float(rank + 1), dtype=torch.float64)
    avg = average_samples(mine)
    assert torch.equal(avg, torch.full((3, 4), 1.5, dtype=torch.float64)), avg
    picked = broadcast_selection([rank, 7, 9] if rank == 0 else [5, 6, 8])
    assert picked == [0, 7, 9], picked

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=64,
                                  max_position_embeddings=40, num_labels=3)
    base = transformers.BertForSequenceClassification(cfg)
    gm = get_graphopt_model(base, GGMConfig(rank=3, n_important=2, n_select=5,
                                            warmup_steps=2, scoring_steps=3, selection=sys.argv[2]))
    model = DDP(gm, find_unused_parameters=True)
    opt = torch.optim.AdamW([p for p in gm.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    alloc = GGMAllocator(gm)
    g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    snap = None
    for step in range(9):
        ids = torch.randint(3, 64, (4, 8), generator=g)
        labels = torch.randint(0, 3, (4,), generator=g)
        opt.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        alloc.step()
        if alloc.allocation is not None and snap is None:
            snap = [[p.detach().clone() for p in n.params] for n in gm.nodes]
    moved = [any(not torch.equal(p.detach(), s) for p, s in zip(n.params, snap[n.index]))
             for n in gm.nodes]
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                     for p in gm.parameters())).hexdigest()
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
        json.dump({"selected": alloc.allocation.selected, "moved": moved, "digest": digest,
                   "samples": alloc.allocation.samples.tolist(),
                   "trainable": [n.index for n in gm.nodes if n.trainable]}, fh)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_identity_without_process_group():
    assert not is_distributed()
    x = torch.rand(3, 4)
    assert average_samples(x) is x
    assert broadcast_selection([3, 1]) == [3, 1]


@pytest.mark.parametrize("selection", ["ggm"])
def test_two_gloo_ranks_select_the_same_nodes_and_keep_training(tmp_path, selection):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    env_base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                    PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), selection],
                              env=dict(env_base, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=180)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["selected"] == r1["selected"] and len(r0["selected"]) == 5
    assert r0["trainable"] == r1["trainable"] == r0["selected"]
    assert r0["samples"] == r1["samples"]  # averaged before the covariance
    # training continued after selection: exactly the selected nodes moved, in lockstep
    assert [i for i, m in enumerate(r0["moved"]) if m] == r0["selected"]
    assert r0["moved"] == r1["moved"]
    assert r0["digest"] == r1["digest"]
