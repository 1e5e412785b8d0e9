"""Graph spectra and spectral filters ``h(L) X = U h(Λ) Uᵀ X`` (docs/algorithms.md §4).

Three ways to apply a filter, one function each, dispatched by :class:`SpectralFilter`:

- ``"exact"``: eigendecomposition ``L = U Λ Uᵀ`` (all eigenpairs by ``torch.linalg.eigh``,
  or only the k lowest for ``lowpass(k)`` on large sparse graphs), then ``U h(Λ) Uᵀ X``.
- ``"chebyshev"``: degree-K Chebyshev expansion in ``L̃ = 2L/λ_max − I`` (see
  :mod:`graphopt._chebyshev`): K products with L, no eigenvectors, O(K · nnz · d).
- ``"solve"``: the Tikhonov response only, ``(I + aL)^{-1} X`` by batched conjugate gradient.

:class:`SpectralFilter` does the per-graph work once (eigenpairs, or λ_max and coefficients)
so that applying it every training step costs only the filter itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from ._cg import CGInfo, tikhonov_cg
from ._chebyshev import chebyshev_apply, chebyshev_coefficients, estimate_lmax, jackson_damping
from ._linop import as_graph_matrix, check_graph_symmetric, diagonal, is_sparse, to_csr, to_dense
from ._tensor import ArrayLike, check_finite, to_output, to_tensor
from .exceptions import ConvergenceWarning
from .responses import Response, as_response, heat, lowpass, parse_response, tikhonov

__all__ = [
    "GraphSpectrum",
    "graph_spectrum",
    "SpectralFilter",
    "spectral_filter",
    "Response",
    "heat",
    "tikhonov",
    "lowpass",
    "parse_response",
]

#: How a SpectralFilter applies h(L): eigenpairs, a Chebyshev polynomial, or a linear solve.
SPECTRAL_FILTER_METHODS = ("exact", "chebyshev", "solve")

# Below this many nodes a partial spectrum is taken from the full dense eigh (exact and
# cheap); above it, from SciPy's shift-invert Lanczos.
_DENSE_EIGH_MAX = 2048


class GraphSpectrum(NamedTuple):
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of a Laplacian."""

    eigenvalues: Any
    eigenvectors: Any


def _check_laplacian(
    L: ArrayLike, name: str = "L", validate: bool = True
) -> tuple[torch.Tensor, bool]:
    Lt, as_numpy = as_graph_matrix(L, name=name)
    if validate:
        check_graph_symmetric(Lt, name)
    return Lt, as_numpy


def _partial_spectrum_scipy(L: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest eigenpairs by ARPACK in shift-invert mode around σ slightly below 0.

    ``L − σI`` is then positive definite (L is PSD), so its sparse LU exists and the modes
    nearest σ, the smallest ones, converge first. Runs on the CPU in float64 (one host round
    trip; the spectrum is computed once per graph).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    from ._chebyshev import gershgorin_bound

    coo = (L if L.layout == torch.sparse_coo else L.to_sparse_coo()).coalesce()
    idx = coo.indices().cpu().numpy()
    vals = coo.values().detach().cpu().to(torch.float64).numpy()
    n = L.shape[0]
    A = sp.csc_matrix((vals, (idx[0], idx[1])), shape=(n, n))
    sigma = -1e-3 * max(gershgorin_bound(L), 1e-12)
    evals, evecs = eigsh(A, k=k, sigma=sigma, which="LM")
    order = np.argsort(evals)
    ev = torch.from_numpy(evals[order]).to(dtype=L.dtype, device=L.device)
    U = torch.from_numpy(np.ascontiguousarray(evecs[:, order])).to(dtype=L.dtype, device=L.device)
    return ev, U


def _spectrum(L: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    n = L.shape[0]
    if k is None or k == n or n <= _DENSE_EIGH_MAX or not is_sparse(L) or k >= n // 2:
        evals, U = torch.linalg.eigh(to_dense(L))
        if k is not None:
            evals, U = evals[:k], U[:, :k]
        return evals, U
    return _partial_spectrum_scipy(L, k)


def graph_spectrum(L: ArrayLike, k: int | None = None, *, validate: bool = True) -> GraphSpectrum:
    """Eigenpairs of a symmetric Laplacian ``L = U Λ Uᵀ``, eigenvalues ascending.

    ``k=None``: all n pairs by ``torch.linalg.eigh`` on the dense matrix (O(n³), in L's dtype
    and device). ``k``: the k smallest; for a sparse L with n > 2048 and k < n/2 by SciPy's
    ``eigsh`` in shift-invert mode (σ = −10⁻³ · Gershgorin bound, CPU float64, results cast
    back), otherwise by slicing the dense eigh.
    """
    Lt, as_numpy = _check_laplacian(L, validate=validate)
    n = Lt.shape[0]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k must be an int or None, got {type(k).__name__}")
        if not 1 <= k <= n:
            raise ValueError(f"k must satisfy 1 <= k <= n = {n}, got k={k}")
    evals, U = _spectrum(Lt, k)
    return GraphSpectrum(to_output(evals, as_numpy), to_output(U, as_numpy))


def _signals(X: ArrayLike, n: int, validate: bool = True) -> tuple[torch.Tensor, bool, bool]:
    if isinstance(X, torch.Tensor):
        Xt, as_numpy = (X if X.is_floating_point() else X.to(torch.float64)), False
    else:
        Xt, as_numpy = to_tensor(X, name="X")
    if Xt.ndim not in (1, 2):
        raise ValueError(f"X must have shape (n,) or (n, d), got {tuple(Xt.shape)}")
    if Xt.shape[0] != n:
        raise ValueError(f"X has {Xt.shape[0]} rows but the graph has {n} nodes")
    if validate:  # a host sync on a GPU: skipped with validate=False in hot loops
        check_finite(Xt, "X")
    vector = Xt.ndim == 1
    return (Xt.unsqueeze(-1) if vector else Xt), vector, as_numpy


class SpectralFilter:
    """Reusable filter ``X ↦ h(L) X`` for one graph and one response.

    Construction does the per-graph work once: ``"exact"`` computes and keeps the eigenpairs
    and h(Λ); ``"chebyshev"`` estimates λ_max (unless given) and the coefficients (optionally
    Jackson-damped); ``"solve"`` keeps L and its diagonal. ``__call__(X)`` then costs one
    ``U h(Λ) Uᵀ X`` (O(n²d)), K sparse products (O(K·nnz·d)) or one CG solve. X may be (n,)
    or (n, d), on any device and in float32/float64: the cached tensors are converted to X's
    dtype and device once and kept.

    Parameters: ``order`` K of the Chebyshev polynomial (≥ 1); ``lmax`` a number, or
    ``"lanczos"`` (default: 20 Lanczos steps, +1 % margin, capped at the Gershgorin bound) or
    ``"gershgorin"`` (row-sum bound, 2·max degree for D − W); ``damping`` ``None`` or
    ``"jackson"``; ``tol``/``max_iter`` for CG (default tol: 1e-10 in float64, 1e-5 in
    float32). After each CG call ``info`` holds a :class:`CGInfo`; a solve that hits
    ``max_iter`` warns with :class:`ConvergenceWarning`. ``validate=False`` skips the
    symmetry check of L at construction and the finiteness check of X at each call (a host
    sync on a GPU).
    """

    def __init__(
        self,
        L: ArrayLike,
        response: Response | str | Callable[[torch.Tensor], torch.Tensor],
        *,
        method: Literal["exact", "chebyshev", "solve"] = "exact",
        order: int = 30,
        lmax: float | str | None = None,
        damping: Literal["jackson"] | None = None,
        tol: float | None = None,
        max_iter: int = 1000,
        validate: bool = True,
    ) -> None:
        if method not in SPECTRAL_FILTER_METHODS:
            raise ValueError(f"method must be one of {SPECTRAL_FILTER_METHODS}, got {method!r}")
        self.response = as_response(response)
        self.method = method
        self.validate = validate
        Lt, _ = _check_laplacian(L, validate=validate)
        self.n = Lt.shape[0]
        self.L = Lt
        self.info: CGInfo | None = None
        self.lmax: float | None = None
        self.coefficients: torch.Tensor | None = None
        self.eigenvalues: torch.Tensor | None = None
        self.eigenvectors: torch.Tensor | None = None
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}
        if method == "exact":
            self._init_exact()
        elif method == "chebyshev":
            self._init_chebyshev(order, lmax, damping)
        else:
            self._init_solve(tol, max_iter)

    # -- construction: the per-graph work -------------------------------------------------
    def _init_exact(self) -> None:
        k = self.response.n_modes
        if k is not None and k > self.n:
            raise ValueError(f"lowpass k={k} exceeds the number of nodes n={self.n}")
        evals, U = _spectrum(self.L, k)
        self.eigenvalues, self.eigenvectors = evals, U
        self._gain = self.response(evals)

    def _init_chebyshev(self, order: int, lmax: float | str | None, damping: str | None) -> None:
        if not self.response.smooth:
            raise ValueError(
                f"response {self.response} is discontinuous (it selects modes by index), so a "
                "Chebyshev polynomial cannot represent it; use method='exact'"
            )
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if damping not in (None, "jackson"):
            raise ValueError(f"damping must be None or 'jackson', got {damping!r}")
        if lmax is None or isinstance(lmax, str):
            self.lmax = estimate_lmax(self.L, "lanczos" if lmax is None else lmax)
        else:
            value = float(lmax)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"lmax must be a positive finite number, got {lmax!r}")
            self.lmax = value
        nodes = None if damping is None else 16 * (order + 1)
        c = chebyshev_coefficients(self.response, order, self.lmax, nodes=nodes)
        if damping == "jackson":
            c = c * jackson_damping(order)
        self.coefficients = c
        self._coeff_list = [float(v) for v in c]
        self.order = order
        self.damping = damping

    def _init_solve(self, tol: float | None, max_iter: int) -> None:
        if self.response.name != "tikhonov":
            raise ValueError(
                f"method='solve' applies only the Tikhonov response (I + aL)^-1, got response "
                f"{self.response}; use method='exact' or 'chebyshev'"
            )
        if tol is not None and not (float(tol) > 0):
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
        self.tol, self.max_iter = tol, max_iter
        self.a = float(self.response.params["a"])

    # -- application -----------------------------------------------------------------------
    def _ops(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cached tensors in ``like``'s dtype and device (converted once per combination)."""
        key = (like.dtype, like.device)
        if key not in self._cache:
            def conv(t: torch.Tensor) -> torch.Tensor:
                return t.to(dtype=like.dtype, device=like.device)

            if self.method == "exact":
                assert self.eigenvectors is not None
                ops: tuple[torch.Tensor, ...] = (conv(self.eigenvectors), conv(self._gain))
            elif self.method == "chebyshev":
                ops = (to_csr(conv(self.L)),)
            else:
                Lc = to_csr(conv(self.L))
                minv = (1.0 + self.a * diagonal(conv(self.L))).reciprocal()[:, None]
                ops = (Lc, minv)
            self._cache[key] = ops
        return self._cache[key]

    def __call__(self, X: ArrayLike) -> Any:
        """Return ``h(L) X`` with X's shape, dtype, device (NumPy in, NumPy out)."""
        Xt, vector, as_numpy = _signals(X, self.n, self.validate)
        ops = self._ops(Xt)
        if self.method == "exact":
            U, gain = ops
            Y = U @ (gain[:, None] * (U.T @ Xt))
        elif self.method == "chebyshev":
            (Lc,) = ops
            assert self.lmax is not None
            Y = chebyshev_apply(Lc, Xt, self._coeff_list, self.lmax)
        else:
            Lc, minv = ops
            tol = self.tol if self.tol is not None else (1e-5 if Xt.dtype == torch.float32 else 1e-10)
            Y, self.info = tikhonov_cg(Lc, Xt, self.a, tol=tol, max_iter=self.max_iter, minv=minv)
            if not self.info.converged:
                warnings.warn(
                    f"CG for (I + aL)^-1 X stopped after {self.info.iterations} iterations with "
                    f"relative residual {self.info.residual:.3g} > tol {tol:g}",
                    ConvergenceWarning,
                    stacklevel=2,
                )
        if vector:
            Y = Y.squeeze(-1)
        return to_output(Y, as_numpy)

    def __repr__(self) -> str:
        extra = f", order={self.order}, lmax={self.lmax:.4g}" if self.method == "chebyshev" else ""
        return f"SpectralFilter(n={self.n}, response={self.response}, method={self.method!r}{extra})"


def spectral_filter(
    L: ArrayLike,
    X: ArrayLike,
    response: Response | str | Callable[[torch.Tensor], torch.Tensor],
    method: Literal["exact", "chebyshev", "solve"] = "exact",
    order: int = 30,
    lmax: float | str | None = None,
    **kwargs: Any,
) -> Any:
    """One-shot ``h(L) X`` (see :class:`SpectralFilter` for methods and options)."""
    return SpectralFilter(L, response, method=method, order=order, lmax=lmax, **kwargs)(X)
