"""Spectral regulariser: the graph Dirichlet energy of the parameter update (ALGORITHMS.md §4).

For every block b of a :class:`~graphopt.peft.param_graph.ParameterGraph` (rows = nodes),

    R_μ(Θ) = μ Σ_b tr((Θ_b − Θ_b⁰)ᵀ L_b (Θ_b − Θ_b⁰)),
    ∂R_μ/∂Θ_b = μ (L_b + L_bᵀ)(Θ_b − Θ_b⁰)   (= 2μ L_b (Θ_b − Θ_b⁰) for symmetric L_b).

For a combinatorial Laplacian this is (μ/2) Σ_ij W_ij ‖Δ_i − Δ_j‖² with Δ = Θ − Θ⁰: it charges
neighbouring nodes for moving differently, i.e. the high graph-frequency content of the update.
ALGORITHMS.md writes R = 2 tr(ΔᵀLΔ); here μ multiplies tr(ΔᵀLΔ) directly (issue 5), so
``SpectralRegularizer(mu)`` equals the spec's μ_spec R with μ = 2 μ_spec.

Hooks: a plain loop adds ``loss = loss + reg()``; ``transformers.Trainer`` users use
:class:`SpectralTrainer` (adds the term in ``compute_loss``); the CLI goes through
:mod:`graphopt.peft.spectral_coordination`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._tensor import check_nonneg_number
from ..energy import dirichlet_energy
from ._lazy import lazy_attributes
from .param_graph import ParameterGraph, _stack

__all__ = ["SpectralRegularizer", "SpectralTrainer"]


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


def _make_trainer_class() -> type:
    from transformers import Trainer

    class SpectralTrainer(Trainer):
        """``transformers.Trainer`` that adds ``R_μ`` to the task loss in ``compute_loss``.

        ``SpectralTrainer(..., spectral_regularizer=reg, spectral_filter=filt)``: either may be
        None. The filter is attached as a :class:`~graphopt.peft.spectral_filter.
        SpectralFilterCallback` (runs in ``on_pre_optimizer_step``, after the Trainer's
        gradient clipping). The regulariser is added to every micro-batch loss, which the
        Trainer then scales like the task loss (by 1/accumulation steps unless the model
        normalises by ``num_items_in_batch``), so for a mean-reduced task loss its relative
        weight does not depend on gradient accumulation.
        """

        def __init__(self, *args: Any, spectral_regularizer: SpectralRegularizer | None = None,
                     spectral_filter: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spectral_regularizer = spectral_regularizer
            if spectral_filter is not None:
                from .spectral_filter import SpectralFilterCallback

                self.add_callback(SpectralFilterCallback(spectral_filter))

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            """Add the latest regulariser value to training logs as ``spectral_reg``."""
            reg = self.spectral_regularizer
            if "loss" in logs and reg is not None and reg.last_value is not None:
                logs = {**logs, "spectral_reg": float(reg.last_value)}
            super().log(logs, *args, **kwargs)

        def compute_loss(self, model: nn.Module, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if self.spectral_regularizer is None or not model.training:
                return out
            if return_outputs:
                loss, outputs = out
                return loss + self.spectral_regularizer(), outputs
            return out + self.spectral_regularizer()

    return SpectralTrainer


# transformers is optional and slow to import: the Trainer subclass is made on first use.
__getattr__ = lazy_attributes(__name__, {"SpectralTrainer": _make_trainer_class})
