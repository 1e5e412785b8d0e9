"""Per-node importance samples: AdaLoRA sensitivity × uncertainty EMAs (ALGORITHMS.md §3).

For every node parameter p, after each optimiser step of the scoring phase, elementwise:

    I_t = |p ⊙ ∇p|
    Ī_t = β₁ Ī_{t−1} + (1 − β₁) I_t              (sensitivity EMA, Ī_0 = 0)
    Ū_t = β₂ Ū_{t−1} + (1 − β₂) |I_t − Ī_t|      (uncertainty EMA, Ū_0 = 0)
    s_t = Ī_t ⊙ Ū_t

A node's sample at step t is the mean of s_t over its parameters — for a PC node the average
of the mean over a_i and the mean over b_i, for a bias node the mean over the bias. Stacking
the steps gives X (T × n).

Implementation: one ``torch._foreach_*`` kernel sequence over all node parameters per step
(no Python loop over parameters doing tensor math), means via the ℓ1 norm (s ≥ 0, so
mean = ‖s‖₁ / numel), and samples kept on the parameters' device until ``samples()``.
EMAs are held in float32 at least (half-precision products of tiny gradients underflow).
"""

from __future__ import annotations

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
        owner = [i for i, node in enumerate(nodes) for _ in node.params]
        weight = [1.0 / len(node.params) for node in nodes for _ in node.params]
        device = self.params[0].device
        self.n_nodes = len(nodes)
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)
        numel = torch.tensor([p.numel() for p in self.params], dtype=torch.float64, device=device)
        # contribution of ‖s‖₁ of parameter k to its node's sample: weight_k / numel_k
        self._scale = torch.tensor(weight, dtype=torch.float64, device=device) / numel
        self._state_dtype = [torch.promote_types(p.dtype, torch.float32) for p in self.params]
        self._ema_i: list[torch.Tensor] | None = None
        self._ema_u: list[torch.Tensor] | None = None
        self._samples: list[torch.Tensor] = []

    @property
    def n_steps(self) -> int:
        return len(self._samples)

    @torch.no_grad()
    def update(self) -> torch.Tensor:
        """Score the current parameters and gradients; append and return the n-vector sample.

        A parameter without a gradient (unused in the step) contributes I_t = 0.
        """
        values, grads = [], []
        for p, dt in zip(self.params, self._state_dtype):
            values.append(p.detach().to(dt))
            grads.append(torch.zeros_like(values[-1]) if p.grad is None else p.grad.detach().to(dt))
        sens = torch._foreach_mul(values, grads)
        torch._foreach_abs_(sens)
        if self._ema_i is None:
            self._ema_i = [torch.zeros_like(t) for t in sens]
            self._ema_u = [torch.zeros_like(t) for t in sens]
        torch._foreach_lerp_(self._ema_i, sens, 1.0 - self.beta1)       # Ī_t
        dev = torch._foreach_sub(sens, self._ema_i)
        torch._foreach_abs_(dev)                                        # |I_t − Ī_t|
        torch._foreach_lerp_(self._ema_u, dev, 1.0 - self.beta2)        # Ū_t
        s = torch._foreach_mul(self._ema_i, self._ema_u)                # s_t
        l1 = torch.stack(torch._foreach_norm(s, 1)).to(torch.float64)   # ‖s‖₁ per parameter
        sample = torch.zeros(self.n_nodes, dtype=torch.float64, device=l1.device)
        sample.index_add_(0, self._owner.to(l1.device), l1 * self._scale.to(l1.device))
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
