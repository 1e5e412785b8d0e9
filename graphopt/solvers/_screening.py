"""Exact screening for the graphical lasso (Witten, Friedman & Simon 2011; Mazumder & Hastie
2012; docs/algorithms.md §1).

The connected components of the graph with an edge i–j (i ≠ j) wherever |S_ij| > α are
exactly the connected components of the solution's support. The block-diagonal Θ assembled
from the blocks' own solutions satisfies the full problem's KKT conditions: across blocks
Θ_ij = 0 and W_ij = (Θ⁻¹)_ij = 0, so |W_ij − S_ij| = |S_ij| ≤ α. With the diagonal penalised the
same argument holds. The problem therefore splits into independent smaller ones, and

- a block of size 1 has the closed form Θ_ii = 1 / (S_ii + α·[diagonal penalised]),
  where f and the dual d agree exactly (gap 0);
- the certificates add up: for the block-diagonal dual point W̃ (W̃_ij = 0 across blocks, i.e.
  Y_ij = −S_ij with |S_ij| ≤ α, feasible), log det W̃ = Σ_blocks log det W̃_b, and f(Θ) is the
  sum of the blocks' objectives, so the certified gap is the sum of the blocks' gaps.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

__all__ = ["components", "group_blocks", "whole_problem"]


def components(S: torch.Tensor, alpha: torch.Tensor) -> list[list[np.ndarray]]:
    """Per problem of a batch (B, p, p): the index sets of the connected components of the
    graph |S_ij| > α_b (i ≠ j), each sorted, the list ordered by decreasing size."""
    p = S.shape[-1]
    adj = S.abs() > alpha.reshape(-1, 1, 1)
    adj.diagonal(dim1=-2, dim2=-1).fill_(False)
    adj_np = adj.cpu().numpy()  # one host transfer of a boolean matrix per call
    out: list[list[np.ndarray]] = []
    for b in range(adj_np.shape[0]):
        if not adj_np[b].any():
            out.append([np.array([i]) for i in range(p)])
            continue
        n, labels = _component_labels(adj_np[b])
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n)
        parts = np.split(order, np.cumsum(counts)[:-1])
        parts.sort(key=lambda ix: (-ix.size, int(ix[0])))
        out.append(parts)
    return out


@njit(cache=True)
def _component_labels(adj: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, component label of each vertex) of the undirected graph with
    the symmetric boolean adjacency matrix ``adj``, by depth-first search over its rows.
    O(p²) on the dense matrix, as cheap as reading it: at p ≤ 100 SciPy's sparse route
    (building a CSR matrix, validating it) cost ~0.5 ms a call, more than the solve."""
    p = adj.shape[0]
    labels = np.full(p, -1, dtype=np.int64)
    stack = np.empty(p, dtype=np.int64)
    n = 0
    for root in range(p):
        if labels[root] >= 0:
            continue
        labels[root] = n
        stack[0] = root
        top = 1
        while top > 0:
            top -= 1
            i = stack[top]
            row = adj[i]
            for k in range(p):
                if row[k] and labels[k] < 0:
                    labels[k] = n
                    stack[top] = k
                    top += 1
        n += 1
    return n, labels


def whole_problem(batch: int, p: int) -> list[list[np.ndarray]]:
    """The blocks when screening is off: every problem is one block of all p variables."""
    return [[np.arange(p)] for _ in range(batch)]


def group_blocks(blocks: list[list[np.ndarray]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Blocks of equal size across the batch, to be solved as one batch: size k ->
    (problem index of each block (n,), variable indices (n, k))."""
    by_size: dict[int, tuple[list[int], list[np.ndarray]]] = {}
    for b, parts in enumerate(blocks):
        for ix in parts:
            problems, idx = by_size.setdefault(int(ix.size), ([], []))
            problems.append(b)
            idx.append(ix)
    return {k: (np.asarray(pb, dtype=np.int64), np.stack(ix).astype(np.int64))
            for k, (pb, ix) in sorted(by_size.items())}
