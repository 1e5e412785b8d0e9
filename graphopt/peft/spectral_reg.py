"""Spectral regulariser: the graph Dirichlet energy of the parameter update (docs/algorithms.md §4).

For every block b of a :class:`~graphopt.peft.param_graph.ParameterGraph` (rows = nodes),

    R_μ(Θ) = μ Σ_b tr((Θ_b − Θ_b⁰)ᵀ L_b (Θ_b − Θ_b⁰)),
    ∂R_μ/∂Θ_b = μ (L_b + L_bᵀ)(Θ_b − Θ_b⁰)   (= 2μ L_b (Θ_b − Θ_b⁰) for symmetric L_b).

For a combinatorial Laplacian this is (μ/2) Σ_ij W_ij ‖Δ_i − Δ_j‖² with Δ = Θ − Θ⁰: it charges
neighbouring nodes for moving differently, i.e. the high graph-frequency content of the update.
μ multiplies tr(ΔᵀLΔ) itself, not the double sum Σ_ij W_ij ‖Δ_i − Δ_j‖² = 2 tr(ΔᵀLΔ)
(docs/algorithms.md §4.4), so μ weighs the Dirichlet energy directly.

Hooks: a plain loop adds ``loss = loss + reg()``; any loop that drives
:class:`~graphopt.peft.hooks.TrainingHook` s (``train_model``, ``transformers.Trainer`` through
:class:`~graphopt.peft.hooks.GraphoptCallback`) takes it inside
:class:`~graphopt.peft.spectral_coordination.SpectralCoordination`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._tensor import check_nonneg_number
from ..energy import dirichlet_energy
from .param_graph import ParameterGraph, _stack

__all__ = ["SpectralRegularizer"]


class SpectralRegularizer:
    """``R_μ(Θ) = μ Σ_b tr((Θ_b − Θ_b⁰)ᵀ L_b (Θ_b − Θ_b⁰))``, differentiable in the parameters.

    The reference Θ⁰ is a copy of every node parameter taken at construction (normally the
    pretrained values) or at :meth:`reset_reference`. The graph may be rebuilt at any time
    (e.g. after a GGM selection froze nodes); the reference stays per parameter, so restricting
    a block to its surviving nodes needs no new snapshot. ``last_value`` holds the latest value
    (detached tensor: reading it with ``float()`` is the only synchronisation).
    """

    def __init__(self, graph: ParameterGraph, mu: float) -> None:
        if not isinstance(graph, ParameterGraph):
            raise TypeError(f"graph must be a ParameterGraph, got {type(graph).__name__}")
        self.graph = graph
        self.mu = check_nonneg_number(mu, "mu")
        self.last_value: torch.Tensor | None = None
        self.reset_reference()

    def reset_reference(self) -> None:
        """Take Θ⁰ = the parameters' current values."""
        # Keyed by id(): tensors hash by identity but compare elementwise.
        self._ref: dict[int, torch.Tensor] = {}
        for node in self.graph.nodes:
            for piece in node.pieces:
                if id(piece.param) not in self._ref:
                    self._ref[id(piece.param)] = piece.param.detach().clone()
        self._ref_blocks: dict[str, torch.Tensor] = {}
        self._ref_version = -1

    def _reference(self, block: Any) -> torch.Tensor:
        if self._ref_version != self.graph.version:
            self._ref_blocks, self._ref_version = {}, self.graph.version
        if block.name not in self._ref_blocks:
            self._ref_blocks[block.name] = _stack(block.nodes, lambda p: self._ref[id(p)])
        return self._ref_blocks[block.name]

    def __call__(self, model: nn.Module | None = None) -> torch.Tensor:
        """The regulariser value (0-d tensor with autograd); ``model`` is accepted for hook
        symmetry and ignored (the graph already holds the parameters)."""
        total: torch.Tensor | None = None
        for block in self.graph.blocks:
            delta = block.values() - self._reference(block)
            e = dirichlet_energy(delta, block.L)
            total = e if total is None else total + e
        if total is None:  # no block (e.g. a signals graph before its first rebuild)
            p = self.graph.nodes[0].pieces[0].param
            total = p.new_zeros(())
        value = self.mu * total
        self.last_value = value.detach()
        return value

    @torch.no_grad()
    def gradients(self) -> dict[str, torch.Tensor]:
        """Closed form ``μ (L_b + L_bᵀ)(Θ_b − Θ_b⁰)`` per block (for checks and direct use)."""
        out = {}
        for block in self.graph.blocks:
            delta = block.values() - self._reference(block)
            L = block.L.to(dtype=delta.dtype, device=delta.device)
            Ld = L.to_dense() if L.layout != torch.strided else L
            out[block.name] = self.mu * ((Ld + Ld.T) @ delta)
        return out
