"""Spectral gradient filter: low-pass the stacked node gradients over the parameter graph.

Between ``loss.backward()`` and ``optimizer.step()``, for every block b (rows = nodes),

    G_b ← (1 − β) G_b + β h(L_b) G_b,     h(L) = U h(Λ) Uᵀ   (docs/algorithms.md §4),

with a low-pass response h (heat exp(−tλ), Tikhonov 1/(1+aλ), ideal low-pass k, or a callable)
applied by :class:`graphopt.spectral.SpectralFilter` (``"exact"`` eigenpairs or ``"chebyshev"``
polynomial, built once per graph and cached between steps). ``removed`` records
‖G − G̃‖² / ‖G‖² over all blocks per step.

Order of operations (what to call when):

- plain loop: ``loss.backward(); filt(); [clip_grad_norm_]; optimizer.step()``. Any
  ``torch.optim`` optimiser works: the filter only rewrites ``.grad``.
- gradient clipping: for h(λ) ∈ [0, 1] and β ∈ [0, 1] the map is a contraction (its
  eigenvalues 1 − β + βh(λ) lie in [0, 1]), so clipping before or after filtering both leave
  ‖G̃‖ ≤ max_norm; filtering first makes the threshold apply to the update actually taken.
- AMP: ``scaler.scale(loss).backward(); scaler.unscale_(optimizer); filt(); [clip];
  scaler.step(optimizer); scaler.update()``. The filter is linear so scaled gradients give the
  same result up to the scale, but unscaling first keeps clipping and metrics in true units.
  A block whose gradients are not finite (an overflow step the scaler will skip) is left
  untouched so that the scaler still sees the inf/NaN.
- DDP: call it after ``backward()``: DDP has all-reduced (averaged) the gradients by then, so
  every rank filters identical gradients with an identical (deterministically built) graph
  and takes the identical step. Build the graph from the unwrapped module (``ddp.module``).
- ``transformers.Trainer``: wrap it in :class:`~graphopt.peft.spectral_coordination.
  SpectralCoordination` and pass that hook to :class:`~graphopt.peft.hooks.GraphoptCallback`
  (runs in ``on_pre_optimizer_step``: after the Trainer's clipping, before ``optimizer.step()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..responses import Response, as_response
from ..spectral import SpectralFilter
from .config import FILTER_METHODS
from .param_graph import ParameterGraph

__all__ = ["SpectralGradientFilter", "FILTER_METHODS"]



def _check_beta(beta: Any) -> float:
    if isinstance(beta, bool):
        raise TypeError("beta must be a number, got bool")
    try:
        v = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a number, got {beta!r}") from None
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"beta (the mixing weight) must lie in [0, 1], got {beta!r}")
    return v


def _is_identity(response: Response, n: int, flt: SpectralFilter) -> bool:
    """h ≡ 1 on the block's spectrum: then filtering is skipped, so gradients stay bit-exact."""
    if response.n_modes is not None:
        return response.n_modes >= n
    if flt.eigenvalues is not None:
        lam = flt.eigenvalues.to(torch.float64)
    else:
        top = flt.lmax if flt.lmax is not None else 1.0
        lam = torch.linspace(0.0, float(top), 257, dtype=torch.float64)
    return bool((response(lam) == 1).all())


class SpectralGradientFilter:
    """Replace each block's gradients G by ``(1 − β) G + β h(L) G`` (see the module docstring).

    Parameters: ``graph`` a :class:`ParameterGraph`; ``response`` a
    :class:`~graphopt.responses.Response`, spec string (``"heat:t=1"``) or callable h(λ);
    ``beta`` ∈ [0, 1]; ``method`` ``"auto"`` (per block, the cheaper of exact and Chebyshev;
    exact for the ideal low-pass, see :meth:`_plan`), ``"exact"``, ``"chebyshev"`` or
    ``"solve"`` (Tikhonov); ``block_methods`` says what each block uses; ``order`` of the
    Chebyshev polynomial; ``record`` keeps the per-step removed-energy ratio (a detached
    tensor, no synchronisation until read); ``auto_rebuild`` rebuilds the graph when the set of
    trainable nodes changes (e.g. after a GGM selection).
    """

    def __init__(
        self,
        graph: ParameterGraph,
        response: Response | str | Callable[[torch.Tensor], torch.Tensor] = "heat:t=1",
        *,
        beta: float = 1.0,
        method: str = "auto",
        order: int = 30,
        record: bool = True,
        auto_rebuild: bool = True,
    ) -> None:
        if not isinstance(graph, ParameterGraph):
            raise TypeError(f"graph must be a ParameterGraph, got {type(graph).__name__}")
        if method not in FILTER_METHODS:
            raise ValueError(f"method must be one of {FILTER_METHODS}, got {method!r}")
        self.graph = graph
        self.response = as_response(response)
        self.beta = _check_beta(beta)
        self.method = method
        if method == "chebyshev" and not self.response.smooth:
            raise ValueError(f"response {self.response} needs method='exact' (it is not smooth)")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        self.order = order
        self.record = record
        self.auto_rebuild = auto_rebuild
        self._signature = graph.active_signature()
        self._filters: dict[str, tuple[SpectralFilter | None, bool]] = {}
        self.block_methods: dict[str, str] = {}
        self._version = -1
        self.removed: list[torch.Tensor] = []
        self.steps = 0

    def _block_filters(self) -> dict[str, tuple[SpectralFilter | None, bool]]:
        if self.auto_rebuild:
            sig = self.graph.active_signature()
            if sig != self._signature and self.graph.edges != "signals":
                self.graph.rebuild()
            self._signature = sig
        if self._version != self.graph.version:
            filters: dict[str, tuple[SpectralFilter | None, bool]] = {}
            self.block_methods = {}
            for block in self.graph.blocks:
                modes = self.response.n_modes
                if modes is not None and modes >= block.n_nodes:
                    filters[block.name] = (None, True)  # keeps every mode: the identity
                    continue
                method, L = self._plan(block.L)
                kw: dict[str, Any] = {"order": self.order} if method == "chebyshev" else {}
                flt = SpectralFilter(L, self.response, method=method, validate=False, **kw)
                filters[block.name] = (flt, _is_identity(self.response, block.n_nodes, flt))
                self.block_methods[block.name] = method
            self._filters, self._version = filters, self.graph.version
        return self._filters

    def _plan(self, L: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Method for one block, and L in the layout that method runs fastest with.

        ``auto``: the ideal low-pass needs eigenvectors (exact). Otherwise compare the per-step
        cost of the exact filter, two dense n × n products (2n²d), with the Chebyshev one, K
        products with L (K·nnz·d): small graphs (n up to a few hundred with k = 10) are cheaper
        exactly, large ones by Chebyshev, and beyond 4096 nodes no eigendecomposition is done.
        A mostly-zero dense L is handed to Chebyshev as a sparse matrix.
        """
        n = L.shape[0]
        sparse_in = L.layout != torch.strided
        nnz = int(L._nnz()) if sparse_in else int((L != 0).sum())
        method = self.method
        if method == "auto":
            if not self.response.smooth:
                method = "exact"
            else:
                method = "exact" if n <= 4096 and 2 * n * n <= self.order * nnz else "chebyshev"
        if method in ("chebyshev", "solve") and not sparse_in and nnz < 0.25 * n * n:
            L = L.to_sparse()
        return method, L

    @torch.no_grad()
    def __call__(self, model: nn.Module | None = None) -> torch.Tensor | None:
        """Filter the gradients in place; return ‖G − G̃‖² / ‖G‖² (0-d tensor) or None.

        ``model`` is accepted for hook symmetry and ignored (the graph holds the parameters).
        """
        self.steps += 1
        if self.beta == 0.0:
            return None  # exact no-op: gradients untouched bit for bit
        removed_sq: torch.Tensor | None = None
        total_sq: torch.Tensor | None = None
        filters = self._block_filters()  # may rebuild the graph: before iterating its blocks
        for block in self.graph.blocks:
            flt, identity = filters[block.name]
            if identity or flt is None or not block.has_grad():
                continue
            G = block.grads()
            if not bool(torch.isfinite(G).all()):
                continue  # overflow step: leave the inf/NaN for the GradScaler to see
            F = flt(G)
            Gt = F if self.beta == 1.0 else torch.lerp(G, F, self.beta)
            if self.record:  # before writing back: G may be a view of the .grad it replaces
                r = (G - Gt).pow(2).sum()
                t = G.pow(2).sum()
                removed_sq = r if removed_sq is None else removed_sq + r
                total_sq = t if total_sq is None else total_sq + t
            block.set_grads_(Gt)
        if removed_sq is None or total_sq is None:
            return None
        ratio = removed_sq / total_sq.clamp_min(torch.finfo(total_sq.dtype).tiny)
        self.removed.append(ratio)
        return ratio

    def last_removed(self) -> float:
        """Removed-energy ratio of the latest filtered step (NaN before the first)."""
        return float(self.removed[-1]) if self.removed else math.nan

    def __repr__(self) -> str:
        return (f"SpectralGradientFilter(response={self.response}, beta={self.beta}, "
                f"method={self.method!r}, blocks={self.graph.block_sizes()}, "
                f"block_methods={self.block_methods})")
