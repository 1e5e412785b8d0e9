"""Per-node importance samples: AdaLoRA sensitivity × uncertainty EMAs (docs/algorithms.md §3).

For every node parameter p, after each optimiser step of the scoring phase, elementwise:

    I_t = |p ⊙ ∇p|
    Ī_t = β₁ Ī_{t−1} + (1 − β₁) I_t              (sensitivity EMA, Ī_0 = 0)
    Ū_t = β₂ Ū_{t−1} + (1 − β₂) |I_t − Ī_t|      (uncertainty EMA, Ū_0 = 0)
    s_t = Ī_t ⊙ Ū_t

A node's sample at step t is the mean of s_t over its parameters — for a PC node the average
of the mean over a_i and the mean over b_i, for a bias node the mean over the bias. Stacking
the steps gives X (T × n).

Implementation: all node parameters and gradients are concatenated into one flat vector per
step (one ``torch.cat`` each), the EMAs live in flat buffers, so a step is a few large
elementwise kernels plus one ``index_add_`` that sums s_t / numel into its node — no tensor
math per parameter in Python. Samples stay on the parameters' device until ``samples()``.
EMAs are held in float32 at least (half-precision products of tiny gradients underflow).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = ["NodeScorer"]


class NodeScorer:
    """Accumulates the (T × n) matrix X of node importance samples.

    Parameters
    ----------
    nodes : the model's nodes (anything with ``.params``), in column order.
    beta1, beta2 : EMA factors β₁, β₂ ∈ [0, 1).
    """

    def __init__(self, nodes: Sequence, beta1: float = 0.85, beta2: float = 0.85):
        if not nodes:
            raise ValueError("nodes must not be empty")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.params: list[torch.nn.Parameter] = [p for node in nodes for p in node.params]
        if any(p.ndim != 1 for p in self.params):
            raise ValueError("node parameters must be 1-D vectors (a_i, b_i or a bias)")
        self.n_nodes = len(nodes)
        device = self.params[0].device
        # One flat float buffer for all node parameters: every step is a handful of large
        # elementwise kernels instead of one small kernel per parameter.
        self._dtype = functools.reduce(torch.promote_types, (p.dtype for p in self.params),
                                       torch.float32)
        owner, scale = [], []
        for i, node in enumerate(nodes):
            for p in node.params:
                owner.append(torch.full((p.numel(),), i, dtype=torch.long))
                # node sample = mean over its parameters of (‖s_p‖₁ / numel_p)
                scale.append(torch.full((p.numel(),), 1.0 / (len(node.params) * p.numel()),
                                        dtype=torch.float64))
        self._owner = torch.cat(owner).to(device)
        self._scale = torch.cat(scale).to(device=device, dtype=self._dtype)
        self._zeros = _LazyZeros(self.params)
        self._ema_i: torch.Tensor | None = None
        self._ema_u: torch.Tensor | None = None
        self._samples: list[torch.Tensor] = []

    @property
    def n_steps(self) -> int:
        return len(self._samples)

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Node parameters are 1-D vectors (a_i, b_i, bias), so they concatenate as they are.
        zeros = self._zeros
        grads = [zeros[k] if p.grad is None else p.grad for k, p in enumerate(self.params)]
        return torch.cat(self.params).to(self._dtype), torch.cat(grads).to(self._dtype)

    @torch.no_grad()
    def update(self) -> torch.Tensor:
        """Score the current parameters and gradients; append and return the n-vector sample.

        A parameter without a gradient (unused in the step) contributes I_t = 0.
        """
        values, grads = self._flat()
        sens = (values * grads).abs_()                                   # I_t
        if self._ema_i is None:
            self._ema_i = torch.zeros_like(sens)
            self._ema_u = torch.zeros_like(sens)
        self._ema_i.lerp_(sens, 1.0 - self.beta1)                        # Ī_t
        self._ema_u.lerp_((sens - self._ema_i).abs_(), 1.0 - self.beta2)  # Ū_t
        s = self._ema_i * self._ema_u                                    # s_t ≥ 0
        sample = torch.zeros(self.n_nodes, dtype=torch.float64, device=s.device)
        sample.index_add_(0, self._owner, (s * self._scale).to(torch.float64))
        self._samples.append(sample)
        return sample

    def samples(self) -> torch.Tensor:
        """X, the (T × n) float64 sample matrix, on the parameters' device."""
        if not self._samples:
            return torch.zeros(0, self.n_nodes, dtype=torch.float64, device=self._owner.device)
        return torch.stack(self._samples)

    def reset(self) -> None:
        """Forget the EMAs and the samples."""
        self._ema_i = self._ema_u = None
        self._samples = []

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The EMAs Ī, Ū (flat) and the samples X so far: all a resumed run needs."""
        return {"ema_i": self._ema_i, "ema_u": self._ema_u, "samples": self.samples()}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        """Restore :meth:`state_dict`; the shapes must match these nodes."""
        numel = self._owner.numel()
        for key in ("ema_i", "ema_u"):
            t = state[key]
            if t is not None and tuple(t.shape) != (numel,):
                raise ValueError(f"scorer state {key!r} has shape {tuple(t.shape)}, "
                                 f"these nodes need ({numel},)")
        x = state["samples"]
        if x.ndim != 2 or x.shape[1] != self.n_nodes:
            raise ValueError(f"scorer samples have shape {tuple(x.shape)}, "
                             f"these nodes need (T, {self.n_nodes})")
        device = self._owner.device
        self._ema_i = None if state["ema_i"] is None else state["ema_i"].to(device, self._dtype)
        self._ema_u = None if state["ema_u"] is None else state["ema_u"].to(device, self._dtype)
        self._samples = list(x.to(device, torch.float64).unbind(0))


class _LazyZeros:
    """Zero stand-ins for missing gradients, allocated only for parameters that need one."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self._params = params
        self._cache: dict[int, torch.Tensor] = {}

    def __getitem__(self, k: int) -> torch.Tensor:
        if k not in self._cache:
            self._cache[k] = torch.zeros_like(self._params[k])
        return self._cache[k]
