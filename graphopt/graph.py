"""Graphs over node vectors and their Laplacians (docs/algorithms.md §4, "Graph construction").

- :func:`knn_graph`: k-nearest-neighbour graph with a Gaussian kernel on distances
  ``W_ij = exp(-‖x_i − x_j‖² / σ²)`` or a cosine kernel ``W_ij = max(cos(x_i, x_j), 0)``,
  built in row chunks so that no n × n distance matrix is ever formed, then symmetrised.
- :func:`similarity_graph`: graph from co-varying signals (rows = nodes), cosine or
  correlation similarity clipped at 0, optionally sparsified to k neighbours.
- :func:`laplacian`: combinatorial ``L = D − W`` or normalised
  ``L_sym = D^{-1/2} (D − W) D^{-1/2}`` for dense and torch sparse ``W``.

Output layout rule (both graph builders): ``sparse=None`` gives a torch sparse COO tensor when
``n > SPARSE_THRESHOLD`` and a dense matrix otherwise; ``sparse=True/False`` forces the layout.
Dense results come back as NumPy when the input was NumPy; sparse results are always torch
sparse COO tensors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ._linalg import symmetrize as symmetric_part
from ._linop import as_graph_matrix, check_graph_symmetric, is_sparse, row_sums, sparse_coo
from ._tensor import ArrayLike, check_finite, to_output, to_tensor

__all__ = [
    "SPARSE_THRESHOLD",
    "knn_graph",
    "similarity_graph",
    "laplacian",
    "degrees",
    "check_weights",
]

#: Graph builders return a sparse tensor by default above this many nodes.
SPARSE_THRESHOLD = 1024

# Entries per distance chunk (rows x n): 4M float64 values = 32 MiB, whatever n is.
_CHUNK_ENTRIES = 1 << 22


def _node_matrix(X: ArrayLike, name: str) -> tuple[torch.Tensor, bool]:
    t, came_from_numpy = to_tensor(X, name=name)
    if t.ndim == 1:
        t = t.unsqueeze(-1)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) with one row per node, got {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 rows (nodes), got {t.shape[0]}")
    check_finite(t, name)
    return t, came_from_numpy


def _check_choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _knn_chunked(
    X: torch.Tensor, k: int, kernel: str, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (n, k) of each row's k nearest rows (self excluded) and the exact score.

    Score = distance for the Gaussian kernel (smallest first), cosine similarity for the
    cosine kernel (largest first). Each chunk costs one (chunk x n) product: no n x n matrix.
    """
    n = X.shape[0]
    sq = (X * X).sum(dim=1)
    nbrs = torch.empty(n, k, dtype=torch.long, device=X.device)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        rows = torch.arange(start, stop, device=X.device)
        if kernel == "gaussian":
            # Rank row i by ‖x_j‖² − 2 x_i·x_j = ‖x_i − x_j‖² − ‖x_i‖² (the dropped term
            # is constant along the row): one fused product per chunk; exact distances follow.
            D2 = torch.addmm(sq[None, :], X[start:stop], X.T, alpha=-2.0)
            D2[rows - start, rows] = float("inf")
            nbrs[start:stop] = torch.topk(D2, k, dim=1, largest=False).indices
        else:
            G = X[start:stop] @ X.T
            G[rows - start, rows] = -float("inf")
            nbrs[start:stop] = torch.topk(G, k, dim=1, largest=True).indices
    return nbrs, _pair_scores(X, nbrs, kernel)


def _pair_scores(X: torch.Tensor, nbrs: torch.Tensor, kernel: str) -> torch.Tensor:
    """Exact distance (gaussian) or cosine (rows of X already unit) for each chosen pair.

    Computed elementwise with the same summation order for (i, j) and (j, i), so mutual
    pairs get bit-identical values and symmetrisation never mixes two roundings.
    """
    if kernel == "gaussian":
        return (X[:, None, :] - X[nbrs]).pow(2).sum(dim=-1).sqrt()
    return (X[:, None, :] * X[nbrs]).sum(dim=-1)


def _knn_kdtree(X: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (n, k) of each row's k nearest other rows by SciPy's k-d tree (CPU, O(n log n)
    for low-dimensional X). Queries k + 1 points and drops the row itself."""
    from scipy.spatial import cKDTree

    pts = X.detach().cpu().to(torch.float64).numpy()
    _, idx = cKDTree(pts).query(pts, k=k + 1)
    idx = torch.from_numpy(idx).to(torch.long)
    n = idx.shape[0]
    is_self = idx == torch.arange(n)[:, None]
    # With duplicated points the row itself may be missing from the k + 1 answers: then drop
    # the farthest answer instead, so that every row keeps exactly k others.
    no_self = ~is_self.any(dim=1)
    is_self[no_self, k] = True
    return idx[~is_self].view(n, k).to(X.device)


def _median(v: torch.Tensor) -> torch.Tensor:
    """Median with NumPy's convention (mean of the two middle values for an even count)."""
    s = torch.sort(v).values
    m = s.numel()
    return (s[(m - 1) // 2] + s[m // 2]) / 2


def _symmetrize(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int, how: str
) -> torch.Tensor:
    """Sparse COO ``max(A, Aᵀ)`` or ``(A + Aᵀ)/2`` of the directed graph A given by triples."""
    r = torch.cat([rows, cols])
    c = torch.cat([cols, rows])
    v = torch.cat([vals, vals])
    if how == "mean":
        W = sparse_coo(torch.stack([r, c]), v / 2, (n, n))
    else:
        key = r * n + c
        uniq, inverse = torch.unique(key, return_inverse=True)
        vmax = v.new_zeros(uniq.numel()).scatter_reduce(0, inverse, v, "amax", include_self=False)
        W = sparse_coo(torch.stack([uniq // n, uniq % n]), vmax, (n, n))
    keep = W.values() != 0  # cosine weights clipped to 0 are not edges
    if bool(keep.all()):
        return W
    return sparse_coo(W.indices()[:, keep], W.values()[keep], (n, n))


def _finish(
    W: torch.Tensor, sparse: bool | None, as_numpy: bool
) -> torch.Tensor | np.ndarray:
    n = W.shape[0]
    want_sparse = n > SPARSE_THRESHOLD if sparse is None else bool(sparse)
    if want_sparse:
        return W if is_sparse(W) else W.to_sparse().coalesce()
    W = W.to_dense() if is_sparse(W) else W
    return to_output(W, as_numpy)


def knn_graph(
    X: ArrayLike,
    k: int = 10,
    *,
    kernel: Literal["gaussian", "cosine"] = "gaussian",
    sigma: float | None = None,
    symmetrize: Literal["max", "mean"] = "max",
    sparse: bool | None = None,
    chunk_size: int | None = None,
    algorithm: Literal["auto", "brute", "kdtree"] = "auto",
) -> torch.Tensor | np.ndarray:
    """Symmetric k-nearest-neighbour graph over the rows of ``X`` (n nodes, d features).

    Each node keeps its ``k`` nearest other nodes (Euclidean distance for ``"gaussian"``,
    largest cosine similarity for ``"cosine"``) with weight

    - gaussian: ``W_ij = exp(-‖x_i − x_j‖² / σ²)``; ``sigma=None`` uses the median of the
      n·k nearest-neighbour distances (every node's distances to its k neighbours, self
      excluded, before symmetrisation; mean of the two middle values for an even count);
      if that median is 0 (duplicated points) the median of
      the positive ones, and 1 if all are 0.
    - cosine: ``W_ij = max(cos(x_i, x_j), 0)``; a zero row has similarity 0 to everything.

    The directed graph A is symmetrised by ``"max"`` (``W = max(A, Aᵀ)``: an edge if either
    end chose it) or ``"mean"`` (``W = (A + Aᵀ)/2``: one-sided edges get half weight).
    Distances are computed ``chunk_size`` rows at a time (default: 2²² / n rows), so memory is
    O(chunk_size · n + n · k) and time O(n² d) (``algorithm="brute"``). ``"kdtree"`` finds
    the neighbours with SciPy's k-d tree instead (CPU, Gaussian kernel only; O(n log n) for
    small d); ``"auto"`` uses it for the Gaussian kernel on CPU when d ≤ 16 and
    n > SPARSE_THRESHOLD, brute force otherwise. Both give the same graph up to ties.
    Returns a torch sparse COO tensor or a dense matrix (see the module docstring).
    """
    Xt, as_numpy = _node_matrix(X, "X")
    n = Xt.shape[0]
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < n = {n} (number of nodes), got k={k}")
    _check_choice(kernel, ("gaussian", "cosine"), "kernel")
    _check_choice(symmetrize, ("max", "mean"), "symmetrize")
    _check_choice(algorithm, ("auto", "brute", "kdtree"), "algorithm")
    if algorithm == "kdtree" and kernel != "gaussian":
        raise ValueError("algorithm='kdtree' supports kernel='gaussian' only; use 'brute'")
    if algorithm == "auto":
        use_tree = (
            kernel == "gaussian"
            and Xt.device.type == "cpu"
            and Xt.shape[1] <= 16
            and n > SPARSE_THRESHOLD
        )
        algorithm = "kdtree" if use_tree else "brute"
    if sigma is not None and not (float(sigma) > 0 and float(sigma) < float("inf")):
        raise ValueError(f"sigma must be a positive finite number or None, got {sigma!r}")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // n)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")

    if kernel == "cosine":
        norms = Xt.norm(dim=1, keepdim=True)
        Xt = torch.where(norms > 0, Xt / norms.clamp_min(torch.finfo(Xt.dtype).tiny), 0.0)
    if algorithm == "kdtree":
        nbrs = _knn_kdtree(Xt, k)
        score = _pair_scores(Xt, nbrs, kernel)
    else:
        nbrs, score = _knn_chunked(Xt, k, kernel, chunk_size)
    if kernel == "gaussian":
        if sigma is None:
            sigma_t = _median(score.flatten())
            if not bool(sigma_t > 0):
                pos = score[score > 0]
                sigma_t = _median(pos) if pos.numel() else score.new_tensor(1.0)
        else:
            sigma_t = score.new_tensor(float(sigma))
        vals = torch.exp(-(score / sigma_t) ** 2)
    else:
        vals = score.clamp_min(0.0)
    rows = torch.arange(n, device=Xt.device).repeat_interleave(k)
    W = _symmetrize(rows, nbrs.flatten(), vals.flatten(), n, symmetrize)
    return _finish(W, sparse, as_numpy)


def similarity_graph(
    signals: ArrayLike,
    *,
    measure: Literal["cosine", "correlation"] = "cosine",
    k: int | None = None,
    symmetrize: Literal["max", "mean"] = "max",
    sparse: bool | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor | np.ndarray:
    """Graph of co-varying signals: row i of ``signals`` (n × T) is node i's signal.

    ``W_ij = max(ρ_ij, 0)`` for i ≠ j and ``W_ii = 0``, with ρ the cosine similarity of the
    rows (``"cosine"``) or of the rows after subtracting each row's mean (``"correlation"``,
    i.e. the Pearson correlation). A row with zero norm (a constant row under correlation)
    becomes an isolated node. With ``k`` each node keeps only its k most similar nodes
    (:func:`knn_graph` with the cosine kernel, then symmetrised); without it the graph is
    complete (dense n × n by nature).
    """
    S, as_numpy = _node_matrix(signals, "signals")
    _check_choice(measure, ("cosine", "correlation"), "measure")
    if measure == "correlation":
        raw_norm = S.norm(dim=1, keepdim=True)
        S = S - S.mean(dim=1, keepdim=True)
        # A constant row leaves round-off after centring; treat it as exactly zero (isolated)
        # instead of normalising noise into a random direction.
        flat = S.norm(dim=1, keepdim=True) <= 64 * torch.finfo(S.dtype).eps * raw_norm
        S = torch.where(flat, 0.0, S)
    if k is not None:
        W = knn_graph(
            S, k, kernel="cosine", symmetrize=symmetrize, sparse=True, chunk_size=chunk_size
        )
        return _finish(W, sparse, as_numpy)
    norms = S.norm(dim=1, keepdim=True)
    U = torch.where(norms > 0, S / norms.clamp_min(torch.finfo(S.dtype).tiny), 0.0)
    W = (U @ U.T).clamp_min(0.0)
    W.fill_diagonal_(0.0)
    W = symmetric_part(W)  # exact symmetry despite the product's round-off
    return _finish(W, sparse, as_numpy)


def check_weights(W: ArrayLike, name: str = "W") -> tuple[torch.Tensor, bool]:
    """Validate a weight matrix: square, finite, symmetric, non-negative (dense or sparse)."""
    t, as_numpy = as_graph_matrix(W, name=name)
    vals = t.values() if is_sparse(t) else t
    if vals.numel() and bool((vals < 0).any()):
        raise ValueError(
            f"{name} must have non-negative weights, found minimum {float(vals.min()):.3g}"
        )
    check_graph_symmetric(t, name)
    return t, as_numpy


def degrees(W: ArrayLike) -> torch.Tensor | np.ndarray:
    """Degree vector ``d = W 1`` of a weight matrix (dense or sparse)."""
    t, as_numpy = check_weights(W)
    return to_output(row_sums(t), as_numpy)


def laplacian(
    W: ArrayLike,
    kind: Literal["combinatorial", "normalized"] = "combinatorial",
    *,
    validate: bool = True,
) -> torch.Tensor | np.ndarray:
    """Graph Laplacian of a symmetric non-negative weight matrix ``W``.

    - ``"combinatorial"``: ``L = D − W`` with ``D = diag(W 1)``; symmetric PSD, ``L 1 = 0``.
    - ``"normalized"``: ``L_sym = D^{-1/2} (D − W) D^{-1/2}`` with ``D^{-1/2}`` defined as 0 at
      isolated (zero-degree) nodes, i.e. ``I − D^{-1/2} W D^{-1/2}`` on the other nodes and a
      zero row/column at isolated ones (Chung's convention: no NaN, spectrum in [0, 2], and the
      multiplicity of eigenvalue 0 counts connected components including isolated nodes).

    Dense ``W`` gives a dense ``L`` (NumPy if ``W`` was NumPy); sparse ``W`` (torch or SciPy)
    gives a torch sparse COO ``L``. ``validate=False`` skips the symmetry/sign checks.
    """
    _check_choice(kind, ("combinatorial", "normalized"), "kind")
    if validate:
        Wt, as_numpy = check_weights(W)
    else:
        Wt, as_numpy = as_graph_matrix(W, name="W")
    d = row_sums(Wt)
    n = Wt.shape[0]
    if kind == "combinatorial":
        diag_vals, off_scale = d, None
    else:
        pos = d > 0
        s = torch.where(pos, d.clamp_min(torch.finfo(d.dtype).tiny).rsqrt(), 0.0)
        diag_vals, off_scale = pos.to(d.dtype), s
    if is_sparse(Wt):
        idx, vals = Wt.indices(), Wt.values()
        if off_scale is not None:
            vals = vals * off_scale[idx[0]] * off_scale[idx[1]]
        ar = torch.arange(n, device=Wt.device)
        return sparse_coo(
            torch.cat([idx, torch.stack([ar, ar])], dim=1), torch.cat([-vals, diag_vals]), (n, n)
        )
    off = Wt if off_scale is None else off_scale[:, None] * Wt * off_scale[None, :]
    L = torch.diag(diag_vals) - off
    return to_output(L, as_numpy)
