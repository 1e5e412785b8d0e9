"""The principal-component layer: a frozen residual plus r trainable rank-one nodes.

For a target weight W (d_out × d_in) with SVD W = U diag(s) Vᵀ (docs/algorithms.md §3):

    a_i = U[:, i],   b_i = s_i V[:, i],   W_res = W − Σ_{i<r} a_i⁰ b_i⁰ᵀ   (frozen)
    y = x W_resᵀ + (x Bᵀ) Aᵀ + bias,      A = [a_0 … a_{r−1}] (d_out × r),  B = [b_0; …] (r × d_in)

Each pair (a_i, b_i) is one *node* and owns two separate ``nn.Parameter`` vectors. Separate
parameters (rather than rows of a stacked matrix with a gradient mask) make freezing exact:
a frozen node has ``requires_grad=False`` and ``grad=None``, so every torch optimiser —
AdamW's decoupled weight decay and momentum included — skips it and it cannot move.
The forward pass stacks the r vectors (a cheap copy of r·(d_out + d_in) numbers) and runs
two skinny matmuls, the same cost as a rank-r LoRA.

W_res is computed in float64 from the *stored* initial factors (a⁰, b⁰ after casting to the
weight dtype), so rebuilding a layer from saved a⁰, b⁰ reproduces W_res without an SVD: the
result does not depend on SVD sign conventions or on the LAPACK of the machine.
The wrapped module (``torch.nn.Linear`` or transformers' GPT-2 ``Conv1D``, whose weight is
stored transposed, d_in × d_out) is kept as ``base_layer`` with its weight replaced by W_res.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PCLayer", "is_linear_like", "linear_weight", "principal_factors", "residual_weight"]

try:  # transformers is an optional dependency of graphopt.peft; Conv1D only exists there.
    from transformers.pytorch_utils import Conv1D as _Conv1D
except Exception:  # pragma: no cover - transformers absent
    _Conv1D = None


def _is_conv1d(module: nn.Module) -> bool:
    return _Conv1D is not None and isinstance(module, _Conv1D)


def is_linear_like(module: nn.Module) -> bool:
    """True for ``nn.Linear`` and GPT-2 ``Conv1D`` — the layers a PC adapter can wrap."""
    return isinstance(module, nn.Linear) or _is_conv1d(module)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight in Linear orientation, W (d_out × d_in) (a view; Conv1D stores Wᵀ)."""
    if isinstance(module, nn.Linear):
        return module.weight
    if _is_conv1d(module):
        return module.weight.t()
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")


def principal_factors(weight: torch.Tensor, rank: int, *, name: str = "weight"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-r SVD factors (A⁰ᵀ, B⁰) = (U[:, :r]ᵀ, diag(s_:r) V[:, :r]ᵀ), each row one node.

    Computed in float64 and returned in ``weight.dtype``: shapes (r, d_out) and (r, d_in).
    Raises ValueError when r > min(d_out, d_in) or r exceeds the numerical rank of W
    (singular values below s_max · max(d_out, d_in) · eps(dtype) count as zero) — a
    zero singular value would make a node with b_i = 0 that carries no signal.
    """
    d_out, d_in = weight.shape
    if rank > min(d_out, d_in):
        raise ValueError(f"rank r={rank} for {name} exceeds min(d_out, d_in) = "
                         f"min({d_out}, {d_in}) = {min(d_out, d_in)}")
    w64 = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(w64, full_matrices=False)
    tol = (s[0] if s.numel() else torch.zeros((), dtype=s.dtype)) * max(d_out, d_in) \
        * torch.finfo(weight.dtype).eps
    numerical_rank = int((s > tol).sum())
    if rank > numerical_rank:
        raise ValueError(f"rank r={rank} for {name} exceeds the numerical rank of its weight "
                         f"({numerical_rank}); choose r <= {numerical_rank}")
    a0 = u[:, :rank].t().contiguous()
    b0 = s[:rank, None] * vh[:rank]
    return a0.to(weight.dtype), b0.to(weight.dtype)


def residual_weight(weight: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """W_res = W − A⁰B⁰ = W − Σ_i a_i⁰ b_i⁰ᵀ, formed in float64 and cast to W's dtype."""
    w64 = weight.detach().to(torch.float64)
    return (w64 - a0.to(torch.float64).t() @ b0.to(torch.float64)).to(weight.dtype)


class PCLayer(nn.Module):
    """A Linear/Conv1D split into a frozen residual and r principal-component nodes.

    Parameters
    ----------
    base_layer : the ``nn.Linear`` or ``Conv1D`` to wrap; its weight is overwritten with
        W_res in place and frozen.
    rank : r, the number of nodes (ignored when ``init`` is given).
    bias_node : make the layer's bias trainable (one more node); a layer without a bias
        simply has no bias node.
    init : optional stored initial factors (A⁰ᵀ (r × d_out), B⁰ (r × d_in)) — used when
        loading a saved adapter so no SVD is recomputed.
    name : module name, for error messages.
    """

    def __init__(self, base_layer: nn.Module, rank: int, *, bias_node: bool = False,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None, name: str = "layer"):
        super().__init__()
        if not is_linear_like(base_layer):
            raise TypeError(f"{name}: expected nn.Linear or Conv1D, got {type(base_layer).__name__}")
        self.is_conv1d = _is_conv1d(base_layer)
        weight = linear_weight(base_layer)
        self.d_out, self.d_in = weight.shape
        if init is None:
            a0, b0 = principal_factors(weight, rank, name=name)
        else:
            a0, b0 = (t.to(device=weight.device, dtype=weight.dtype) for t in init)
            if a0.shape[1] != self.d_out or b0.shape[1] != self.d_in or a0.shape[0] != b0.shape[0]:
                raise ValueError(f"{name}: stored factors of shapes {tuple(a0.shape)}, "
                                 f"{tuple(b0.shape)} do not fit a weight of shape "
                                 f"({self.d_out}, {self.d_in})")
        self.rank = int(a0.shape[0])
        w_res = residual_weight(weight, a0, b0)
        with torch.no_grad():
            base_layer.weight.copy_(w_res.t() if self.is_conv1d else w_res)
        base_layer.weight.requires_grad_(False)
        self.base_layer = base_layer
        # The initial factors are kept (not trained, not in the state dict) so save_adapter
        # can store them: they are what W_res was built from.
        self.register_buffer("a0", a0.detach().clone(), persistent=False)
        self.register_buffer("b0", b0.detach().clone(), persistent=False)
        self.pc_a = nn.ParameterList([nn.Parameter(a0[i].detach().clone()) for i in range(self.rank)])
        self.pc_b = nn.ParameterList([nn.Parameter(b0[i].detach().clone()) for i in range(self.rank)])
        bias = getattr(base_layer, "bias", None)
        self.has_bias_node = bool(bias_node and bias is not None)
        if bias is not None:
            bias.requires_grad_(self.has_bias_node)

    # -- nodes ---------------------------------------------------------------------------
    def node_parameters(self) -> list[tuple[str, tuple[nn.Parameter, ...]]]:
        """[(kind, params)] in node order: ("pc", (a_i, b_i)) for i < r, then ("bias", (bias,))."""
        out: list[tuple[str, tuple[nn.Parameter, ...]]] = [
            ("pc", (self.pc_a[i], self.pc_b[i])) for i in range(self.rank)]
        if self.has_bias_node:
            out.append(("bias", (self.base_layer.bias,)))
        return out

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (d_out × r), B (r × d_in)) stacked from the node vectors (differentiable)."""
        return torch.stack(tuple(self.pc_a), dim=1), torch.stack(tuple(self.pc_b), dim=0)

    # -- compute -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = base_layer(x) + (x Bᵀ) Aᵀ, base_layer computing x W_resᵀ + bias."""
        a, b = self.factors()
        return self.base_layer(x) + F.linear(F.linear(x, b), a)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W = W_res + A B in Linear orientation (d_out × d_in), formed in float64."""
        a, b = self.factors()
        w_res = linear_weight(self.base_layer).to(torch.float64)
        return (w_res + a.to(torch.float64) @ b.to(torch.float64)).to(a.dtype)

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Fold A B into the wrapped module's weight and return it (a plain Linear/Conv1D)."""
        w = self.merged_weight()
        self.base_layer.weight.copy_(w.t() if self.is_conv1d else w)
        return self.base_layer

    def extra_repr(self) -> str:
        kind = "Conv1D" if self.is_conv1d else "Linear"
        return (f"{kind}(d_in={self.d_in}, d_out={self.d_out}), rank={self.rank}, "
                f"bias_node={self.has_bias_node}")
