"""Matrices that may be dense or sparse: conversion, validation and the few operations the
graph layer needs (products, row sums, diagonals) written once for both layouts.

A graph matrix (weights W or a Laplacian L) is accepted as a dense tensor, a torch sparse
tensor (COO or CSR), a NumPy array or a SciPy sparse matrix. Internally it is a torch tensor,
dense or sparse COO (coalesced); products use CSR when the matrix is sparse because that is
the faster kernel on CPU and CUDA alike.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ._tensor import check_finite, to_tensor

__all__ = [
    "sparse_coo",
    "as_graph_matrix",
    "is_sparse",
    "matmul",
    "row_sums",
    "row_abs_sums",
    "diagonal",
    "to_dense",
    "to_csr",
    "check_graph_symmetric",
]

_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)


def sparse_coo(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Coalesced COO tensor (duplicates summed). Indices are built by this package, so the
    invariant check is skipped explicitly (which also silences torch's warning about it)."""
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def is_sparse(A: torch.Tensor) -> bool:
    """True for torch sparse layouts (COO, CSR, CSC)."""
    return A.layout in _SPARSE_LAYOUTS


def _is_scipy_sparse(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a hard dependency
        return False
    return sp.issparse(x)


def as_graph_matrix(A: Any, *, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, came_from_numpy)`` for a square, finite graph matrix.

    Dense input stays dense; sparse input (torch or SciPy) becomes a coalesced torch COO
    tensor. Raises ``ValueError`` naming ``name`` for a non-square, empty or non-finite matrix.
    """
    if _is_scipy_sparse(A):
        coo = A.tocoo()
        idx = torch.stack(
            [torch.as_tensor(coo.row, dtype=torch.long), torch.as_tensor(coo.col, dtype=torch.long)]
        )
        vals, _ = to_tensor(coo.data, name=name)
        t = sparse_coo(idx, vals, tuple(coo.shape))
        came_from_numpy = True
    elif isinstance(A, torch.Tensor) and is_sparse(A):
        if not A.dtype.is_floating_point:
            A = A.to(torch.float64)
        t = (A if A.layout == torch.sparse_coo else A.to_sparse_coo()).coalesce()
        came_from_numpy = False
    else:
        t, came_from_numpy = to_tensor(A, name=name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, n) matrix, got shape {tuple(t.shape)}")
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one node, got shape {tuple(t.shape)}")
    check_finite(t.values() if is_sparse(t) else t, name)
    return t, came_from_numpy


def to_dense(A: torch.Tensor) -> torch.Tensor:
    """Dense copy of ``A`` (``A`` itself when already dense)."""
    return A.to_dense() if is_sparse(A) else A


def to_csr(A: torch.Tensor) -> torch.Tensor:
    """CSR copy of a sparse ``A``; dense ``A`` is returned unchanged."""
    if not is_sparse(A) or A.layout == torch.sparse_csr:
        return A
    with warnings.catch_warnings():
        # torch flags CSR as "beta"; products with it are stable and faster than COO.
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return A.to_sparse_csr()


def matmul(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` for dense or sparse ``A`` and dense ``X`` of shape (n,) or (n, d).

    Differentiable in ``X`` (and in dense ``A``).
    """
    if X.ndim == 1:
        return matmul(A, X.unsqueeze(-1)).squeeze(-1)
    if is_sparse(A):
        if A.layout == torch.sparse_coo:
            return torch.sparse.mm(A, X)
        return A @ X
    return A @ X


def row_sums(A: torch.Tensor) -> torch.Tensor:
    """``A 1``: the degree vector when ``A`` is a weight matrix."""
    if is_sparse(A):
        A = A if A.layout == torch.sparse_coo else A.to_sparse_coo()
        if A._nnz() == 0:
            return torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)
        return torch.sparse.sum(A, dim=1).to_dense()
    return A.sum(dim=1)


def row_abs_sums(A: torch.Tensor) -> torch.Tensor:
    """``|A| 1``: the Gershgorin radii plus |diagonal| for each row."""
    if is_sparse(A):
        A = (A if A.layout == torch.sparse_coo else A.to_sparse_coo()).coalesce()
        out = A.values().new_zeros(A.shape[0])
        return out.index_add_(0, A.indices()[0], A.values().abs())
    return A.abs().sum(dim=1)


def diagonal(A: torch.Tensor) -> torch.Tensor:
    """The diagonal of a dense or sparse square matrix."""
    if is_sparse(A):
        A = (A if A.layout == torch.sparse_coo else A.to_sparse_coo()).coalesce()
        idx, vals = A.indices(), A.values()
        on = idx[0] == idx[1]
        out = vals.new_zeros(A.shape[0])
        return out.index_add_(0, idx[0][on], vals[on])
    return torch.diagonal(A)


def check_graph_symmetric(A: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``A`` (dense or sparse) is symmetric up to round-off."""
    rtol = 1e-5 if A.dtype == torch.float32 else 1e-8
    if is_sparse(A):
        A = (A if A.layout == torch.sparse_coo else A.to_sparse_coo()).coalesce()
        if A._nnz() == 0:
            return
        scale = float(A.values().abs().max())
        diff = (A - A.t()).coalesce().values()
        asym = float(diff.abs().max()) if diff.numel() else 0.0
    else:
        scale = float(A.abs().max())
        asym = float((A - A.T).abs().max())
    if scale > 0 and asym > rtol * scale:
        raise ValueError(
            f"{name} must be symmetric: largest |{name} - {name}^T| is {asym:.3g}, "
            f"{asym / scale:.3g} relative to max|{name}| (tolerance {rtol:.1g})"
        )
