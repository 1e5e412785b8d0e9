"""Graph Dirichlet energy: the smoothness of node signals on a graph (docs/algorithms.md §4).

For a combinatorial Laplacian ``L = D − W`` and node signals X (rows = nodes),

    E(X) = tr(Xᵀ L X) = ½ Σ_ij W_ij ‖x_i − x_j‖² = Σ_k λ_k ‖(Uᵀ X)_k‖²,

so it penalises the high graph-frequency content of X. The spectral regulariser of
docs/algorithms.md §4.4 is ``R_μ(Θ) = μ E(Θ − Θ₀)``.
"""

from __future__ import annotations

import torch

from ._linop import as_graph_matrix, is_sparse, matmul
from ._tensor import ArrayLike, to_tensor

__all__ = ["dirichlet_energy"]


def dirichlet_energy(X: ArrayLike, L: ArrayLike) -> torch.Tensor | float:
    """``tr(Xᵀ L X)`` for signals ``X`` of shape (n,) or (n, d) and a dense or sparse ``L``.

    Differentiable (autograd) in ``X`` and in a dense ``L``: ``∂E/∂X = (L + Lᵀ) X``.
    Runs on the device and in the dtype of ``X``; ``L`` is moved/cast once per call if it
    differs (keep them alike in a training loop). Returns a 0-d tensor, or a float when
    ``X`` was NumPy.
    """
    if isinstance(X, torch.Tensor):
        Xt, as_numpy = X, False
        if not Xt.is_floating_point():
            Xt = Xt.to(torch.float64)
    else:
        Xt, as_numpy = to_tensor(X, name="X")
    if isinstance(L, torch.Tensor) and not is_sparse(L) and L.ndim == 2:
        Lt = L  # keep the autograd graph of a dense L intact
        if Lt.shape[0] != Lt.shape[1]:
            raise ValueError(f"L must be square, got shape {tuple(Lt.shape)}")
    else:
        Lt, _ = as_graph_matrix(L, name="L")
    if Xt.ndim not in (1, 2):
        raise ValueError(f"X must have shape (n,) or (n, d), got {tuple(Xt.shape)}")
    if Xt.shape[0] != Lt.shape[0]:
        raise ValueError(
            f"X has {Xt.shape[0]} rows but L is {Lt.shape[0]} x {Lt.shape[1]}: "
            "X needs one row per node"
        )
    if Lt.dtype != Xt.dtype or Lt.device != Xt.device:
        Lt = Lt.to(dtype=Xt.dtype, device=Xt.device)
    energy = (Xt * matmul(Lt, Xt)).sum()
    return float(energy) if as_numpy else energy
