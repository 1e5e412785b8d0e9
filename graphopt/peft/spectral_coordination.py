"""Spectral coordination as a training hook: the Dirichlet regulariser and the gradient filter.

``build_spectral_coordination(config, model, method)`` turns a :class:`~graphopt.peft.config.
SpectralConfig` into a :class:`SpectralCoordination` (or None when neither the regulariser nor
the filter is asked for). It is a :class:`~graphopt.peft.hooks.TrainingHook`, so any loop that
drives hooks runs it:

    loss = out.loss + coord.loss_term(model)    # μ Σ_b tr(ΔᵀL_bΔ)
    loss.backward()
    coord.before_optimizer_step(model)          # G ← (1−β)G + β h(L)G, signals, rebuilds
    optimizer.step()

Graphs (``SpectralConfig.graph``, ``--spectral-graph``): ``knn`` = the method's natural nodes (PC nodes [a_i; b_i] for
ggm / pc-all / random / top-importance, LoRA rank components [B[:, i]; A[i, :]] for lora /
pissa, rows of the trainable matrices and whole bias vectors for full / bitfit) with a
Gaussian k-NN graph on their pretrained values; ``rows`` = rows of the trainable matrices
whatever the method; ``scores`` = the natural nodes with edges from the correlation of their
per-step sensitivity scores s_i = mean |θ ⊙ ∇θ| over the first ``--spectral-window`` steps
(no coordination before that), rebuilt every ``--spectral-rebuild-every`` steps.
A GGM selection that freezes nodes is detected (the set of trainable nodes changes) and every
block graph is restricted to the surviving nodes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import torch
from torch import nn

from .config import SpectralConfig
from .hooks import TrainingHook
from .param_graph import ParameterGraph, build_parameter_graph
from .spectral_filter import SpectralGradientFilter
from .spectral_reg import SpectralRegularizer

__all__ = [
    "build_spectral_coordination",
    "SpectralCoordination",
    "SignalRecorder",
]

class SignalRecorder:
    """Per-step node sensitivities s_i = mean |θ ⊙ ∇θ| over each node, last ``window`` steps.

    The same statistic as the importance samples of docs/algorithms.md §3 (before smoothing);
    stored per block as a ring buffer, so ``signals()`` gives each block's n × T matrix of
    log scores (−inf clipped to −200, as in §3) for :func:`graphopt.graph.similarity_graph`.
    """

    def __init__(self, graph: ParameterGraph, window: int) -> None:
        self.graph = graph
        self.window = window
        self._buf: dict[str, deque[torch.Tensor]] = {}

    @torch.no_grad()
    def record(self) -> None:
        for name, nodes in self.graph.grouped().items():
            from .param_graph import _stack  # the block layout, without building a graph

            if sum(node.rows for node in nodes) < 2:
                continue
            if not any(p.param.grad is not None for node in nodes for p in node.pieces):
                continue
            s = (_stack(nodes, lambda p: p.detach()) * _stack(nodes, lambda p: p.grad)).abs().mean(dim=1)
            self._buf.setdefault(name, deque(maxlen=self.window)).append(s)

    def reset(self) -> None:
        self._buf = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Each block's buffered scores, oldest first (T_b × n_b, on the CPU)."""
        return {name: torch.stack(list(buf)).cpu() for name, buf in self._buf.items() if buf}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        self._buf = {name: deque(x.to(device).unbind(0), maxlen=self.window)
                     for name, x in state.items()}

    def ready(self) -> bool:
        return bool(self._buf) and all(len(b) == self.window for b in self._buf.values())

    def signals(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, buf in self._buf.items():
            S = torch.stack(list(buf), dim=1)
            out[name] = torch.log(S).clamp_min(-200.0)
        return out


class SpectralCoordination(TrainingHook):
    """The regulariser and/or filter of one run, as a training hook with two reports.

    ``loss_term(model)``: the regulariser (a tensor to add to the loss) or None.
    ``before_optimizer_step(model)``: after backward() (and after ``scaler.unscale_``),
    before clipping and ``optimizer.step()``: records scores, rebuilds on schedule, filters.
    ``on_selection()``: force a rebuild (a GGM selection is also detected automatically).
    ``metrics()`` (also ``step_info()``): the latest step's ``spectral_reg`` and
    ``spectral_removed_energy``.
    ``summary()``: settings, graph sizes, per-step histories and time spent in the hooks.
    """

    name = "spectral"

    def __init__(self, graph: ParameterGraph, *, mu: float = 0.0, response: str | None = None,
                 beta: float = 1.0, method: str = "auto", order: int = 30,
                 graph_kind: str = "knn", window: int = 20, rebuild_every: int = 0) -> None:
        self.graph = graph
        self.graph_kind = graph_kind
        self.reg = SpectralRegularizer(graph, mu) if mu > 0 else None
        # auto_rebuild off: this object detects selections itself and rebuilds once.
        self.filter = (SpectralGradientFilter(graph, response, beta=beta, method=method,
                                              order=order, auto_rebuild=False)
                       if response is not None else None)
        self.recorder = SignalRecorder(graph, window) if graph.edges == "signals" else None
        self.rebuild_every = rebuild_every
        self.steps = 0
        self.reg_history: list[float] = []
        self.removed_history: list[float] = []
        self.hook_seconds: list[float] = []
        self._pending_reg: torch.Tensor | None = None
        self._t_loss = 0.0
        self._signature = graph.active_signature()
        # The scores the current graph was built from (a checkpoint rebuilds it from them).
        self._graph_signals: dict[str, torch.Tensor] | None = None

    # -- hooks ---------------------------------------------------------------------------
    def loss_term(self, model: nn.Module | None = None) -> torch.Tensor | None:
        """μ Σ_b tr((Θ_b − Θ_b⁰)ᵀ L_b (Θ_b − Θ_b⁰)) with autograd, or None without a regulariser."""
        if self.reg is None:
            return None
        t0 = time.perf_counter()
        self._maybe_rebuild_for_selection()
        value = self.reg(model)
        self._pending_reg = value.detach()
        self._t_loss = time.perf_counter() - t0
        return value

    def before_optimizer_step(self, model: nn.Module | None = None) -> None:
        """Record signals, rebuild on schedule, filter the gradients in place."""
        t0 = time.perf_counter()
        self.steps += 1
        self._maybe_rebuild_for_selection()
        if self.recorder is not None:
            self.recorder.record()
            first = not self.graph.blocks and self.recorder.ready()
            due = self.rebuild_every > 0 and self.steps % self.rebuild_every == 0 and self.recorder.ready()
            if first or due:
                self._graph_signals = self.recorder.signals()
                self.graph.rebuild(self._graph_signals)
        elif self.rebuild_every > 0 and self.steps % self.rebuild_every == 0:
            self.graph.rebuild()
        removed = self.filter(model) if self.filter is not None else None
        # Histories hold Python floats: one host sync per step, negligible next to a step.
        self.removed_history.append(float(removed) if removed is not None else math.nan)
        self.reg_history.append(float(self._pending_reg) if self._pending_reg is not None else math.nan)
        self._pending_reg = None
        self.hook_seconds.append(self._t_loss + time.perf_counter() - t0)
        self._t_loss = 0.0

    def on_selection(self, *_: Any, **__: Any) -> None:
        """Rebuild every block graph over the nodes that are still trainable.

        A scores graph restarts its window: the buffered scores belong to the old node set.
        """
        if self.recorder is not None:
            self.recorder.reset()
        self._graph_signals = None
        self.graph.rebuild()  # a scores graph has no blocks until its new window is full
        self._signature = self.graph.active_signature()

    def _maybe_rebuild_for_selection(self) -> None:
        sig = self.graph.active_signature()
        if sig != self._signature:
            self.on_selection()

    def step_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.metrics().items() if math.isfinite(v)}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly.

        Step count, per-step histories, the trainable-node signature the graph was last
        built for, and for a scores graph the recorder's window and the scores the current
        graph was built from. A k-NN or rows graph is not stored: it is a function of the
        pretrained values (snapshot at construction) and of the trainable nodes.
        """
        state: dict[str, Any] = {
            "steps": self.steps, "reg_history": list(self.reg_history),
            "removed_history": list(self.removed_history),
            "hook_seconds": list(self.hook_seconds), "signature": list(self._signature),
            "filter_steps": self.filter.steps if self.filter is not None else 0,
            "graph_signals": None if self._graph_signals is None else
            {k: v.detach().cpu() for k, v in self._graph_signals.items()},
            "recorder": None}
        if self.recorder is not None:
            state["recorder"] = self.recorder.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call it after the allocator's (the trainable nodes
        must already be the saved ones) and before the next step."""
        signature = tuple(bool(v) for v in state["signature"])
        if len(signature) != len(self.graph.nodes):
            raise ValueError(f"the saved spectral state covers {len(signature)} graph nodes, "
                             f"this graph has {len(self.graph.nodes)}")
        if (state["recorder"] is not None) != (self.recorder is not None):
            raise ValueError("the saved spectral state was made with another --spectral-graph")
        self.steps = int(state["steps"])
        self.reg_history = list(state["reg_history"])
        self.removed_history = list(state["removed_history"])
        self.hook_seconds = list(state["hook_seconds"])
        if self.filter is not None:
            self.filter.steps = int(state["filter_steps"])
        device = self.graph.nodes[0].pieces[0].param.device
        if self.recorder is not None:
            self.recorder.load_state_dict(state["recorder"], device)
        signals = state["graph_signals"]
        self._graph_signals = (None if signals is None else
                               {k: v.to(device) for k, v in signals.items()})
        self._signature = signature
        # A selection the hook has not seen yet (saved right after the selection step) is
        # detected at the next step, which rebuilds anyway; otherwise rebuild the saved graph.
        if self.graph.active_signature() == signature:
            self.graph.rebuild(self._graph_signals)

    # -- reports -------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Latest step: regulariser value and removed gradient energy ‖G − G̃‖²/‖G‖² (NaN if off)."""
        return {"spectral_reg": self.reg_history[-1] if self.reg_history else math.nan,
                "spectral_removed_energy": self.removed_history[-1] if self.removed_history else math.nan}

    def summary(self) -> dict[str, Any]:
        """Settings, block sizes and per-step histories (JSON-serialisable)."""
        return {
            "graph": self.graph_kind, "edges": self.graph.edges, "k": self.graph.k,
            "blocks": self.graph.block_sizes(),
            "mu": self.reg.mu if self.reg is not None else 0.0,
            "filter": str(self.filter.response) if self.filter is not None else None,
            "beta": self.filter.beta if self.filter is not None else None,
            "method": self.filter.method if self.filter is not None else None,
            "block_methods": dict(self.filter.block_methods) if self.filter is not None else None,
            "steps": self.steps,
            "reg_per_step": [None if math.isnan(v) else v for v in self.reg_history],
            "removed_energy_per_step": [None if math.isnan(v) else v for v in self.removed_history],
            "hook_seconds_per_step": self.hook_seconds,
        }


def _node_kind(graph_kind: str) -> str:
    return "rows" if graph_kind == "rows" else "auto"


def build_spectral_coordination(config: SpectralConfig, model: nn.Module,
                                method_name: str | None = None) -> SpectralCoordination | None:
    """The coordination ``config`` asks for on ``model`` (None if it is off).

    Call it once the method has built its model (before DDP wrapping, before training: the
    k-NN graph and the regulariser's reference Θ⁰ are taken from the current values).
    ``method_name`` only labels errors; the nodes follow from the model (see the module doc).
    """
    if not isinstance(config, SpectralConfig):
        raise TypeError(f"config must be a SpectralConfig, got {type(config).__name__}")
    if not config.enabled:
        return None
    edges = "signals" if config.graph == "scores" else "knn"
    try:
        graph = build_parameter_graph(model, nodes=_node_kind(config.graph), edges=edges,
                                      k=config.k)
    except ValueError as exc:
        raise ValueError(f"--spectral-graph {config.graph} with --method {method_name}: "
                         f"{exc}") from None
    return SpectralCoordination(
        graph, mu=config.reg, response=config.filter, beta=config.mix, method=config.method,
        order=config.order, graph_kind=config.graph, window=config.window,
        rebuild_every=config.rebuild_every)
