"""Node selection from an ℓ2,g-GGM solution (docs/algorithms.md §2, "Node selection").

Every non-important node j ∈ J is scored by the strength of its link to the important set,
c_j = ‖M_{I,j}‖₂ (M = Ω as in the released code, or Δ whose zero groups are exact), and the
selection keeps all of I plus the K − |I| best-scoring nodes of J.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np
import torch

from .._tensor import ArrayLike, check_finite, check_square, to_tensor

__all__ = ["NodeSelection", "select_nodes", "check_important"]


@dataclass
class NodeSelection:
    """Result of ``select_nodes``.

    Attributes
    ----------
    selected : sorted indices of the kept nodes (all of I plus the best of J), int64 NumPy.
    scores : c_j = ‖M_{I,j}‖₂ for every node; NaN on the important nodes (not scored), (p,).
    important : the important indices I (sorted).
    """

    selected: np.ndarray
    scores: np.ndarray
    important: np.ndarray


def check_important(important: ArrayLike, p: int, name: str = "important") -> np.ndarray:
    """Validate an index set I ⊂ {0..p−1}: non-empty, integer, in range, no duplicates."""
    if isinstance(important, torch.Tensor):
        arr = important.detach().cpu().numpy()
    else:
        arr = np.asarray(important)
    arr = arr.ravel()
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one index, got an empty set")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr)))
    ):
        raise ValueError(f"{name} must hold integer node indices, got {arr.tolist()[:10]}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= p:
        raise ValueError(f"{name} must hold indices in [0, {p}), got min {arr.min()}, max {arr.max()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} must not contain duplicated indices, got {arr.tolist()[:10]}")
    return arr


def select_nodes(
    omega_or_delta: ArrayLike,
    important: ArrayLike | None,
    n_select: int,
    *,
    by: str = "norm",
) -> NodeSelection:
    """Keep all important nodes plus the n_select − |I| nodes of J most linked to I.

    Score c_j = ‖M_{I,j}‖₂ (``by="norm"``, the released rule) for j ∈ J, with M the (p, p)
    precision Ω or its group-sparse copy Δ. ``important=None`` (no important nodes): score
    every node by its off-diagonal column norm c_j = ‖M_{−j,j}‖₂ and keep the n_select best.
    Ties are broken by the smaller index, so the selection is deterministic. Raises
    ``ValueError`` unless |I| ≤ n_select ≤ p.
    """
    M, _ = to_tensor(omega_or_delta, name="omega_or_delta", dtype=torch.float64)
    check_square(M, "omega_or_delta", allow_batch=False)
    check_finite(M, "omega_or_delta")
    p = M.shape[-1]
    idx = np.zeros(0, dtype=np.int64) if important is None else check_important(important, p)
    if by != "norm":
        raise ValueError(f"by must be 'norm', got {by!r}")
    if isinstance(n_select, bool) or int(n_select) != n_select:
        raise ValueError(f"n_select must be an integer, got {n_select!r}")
    n_select = int(n_select)
    if n_select < idx.size or n_select > p:
        raise ValueError(
            f"n_select must lie between |important| = {idx.size} and p = {p}, got {n_select}"
        )
    M_np = M.detach().cpu().numpy()
    scores = np.full(p, np.nan)
    rest = np.setdiff1d(np.arange(p), idx)
    if important is None:
        scores[rest] = np.linalg.norm(M_np - np.diag(np.diag(M_np)), axis=0)
    else:
        scores[rest] = np.linalg.norm(M_np[np.ix_(idx, rest)], axis=0)
    if rest.size > n_select - idx.size > 0 and np.ptp(scores[rest]) == 0.0:
        # Every candidate scores the same (typically 0: the solution has no links at working
        # precision), so the ranking below is index order, not information. Say so.
        warnings.warn(
            f"select_nodes: all {rest.size} candidate nodes have the same link score "
            f"{scores[rest][0]:.3g}; the selection falls back to index order",
            RuntimeWarning, stacklevel=2)
    # Stable sort on −score: equal scores keep ascending index order (deterministic ties).
    order = rest[np.argsort(-scores[rest], kind="stable")]
    keep = np.concatenate([idx, order[: n_select - idx.size]])
    return NodeSelection(selected=np.sort(keep), scores=scores, important=np.sort(idx))
