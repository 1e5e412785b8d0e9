"""The ℓ2,g-coupled GGM as the solvers see it: S, the weights, and which entries are grouped.

    F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_groups ‖Δ_group‖₂^g + λ ‖Ω − Δ‖_F²

(docs/algorithms.md §2). Two group structures exist, each a small object that knows how to
read and write its penalised entries as a matrix whose columns are the groups:

- :class:`ImportantLinks`: the groups Δ_{I,j}, j ∈ J — the links of each non-important node
  to the important set I (the published model);
- :class:`OffDiagonalColumns`: the groups Δ_{−j,j} — every column's off-diagonal entries
  (the ablation without important nodes).

Also here: whether F is bounded below for a given S (it depends only on the groups) and the
ridge that makes it so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

__all__ = [
    "GroupStructure",
    "ImportantLinks",
    "OffDiagonalColumns",
    "L2gProblem",
    "MethodOutput",
    "DEFAULT_RIDGE",
    "resolve_regularization",
    "offdiag",
]

#: Default ridge, relative to the mean variance: ε = DEFAULT_RIDGE · tr(S)/p. It raises the
#: total variance by 1 % and bounds cond(S + εI) ≤ 1 + p/DEFAULT_RIDGE (since λ_max ≤ tr S).
DEFAULT_RIDGE = 1e-2


def offdiag(a: torch.Tensor) -> torch.Tensor:
    """A with its diagonal set to zero (batched over leading dimensions)."""
    return a - torch.diag_embed(a.diagonal(dim1=-2, dim2=-1))


class GroupStructure(Protocol):
    """Which entries of Δ the group penalty sees, laid out as a matrix of group columns."""

    @property
    def has_groups(self) -> bool: ...

    def block(self, a: torch.Tensor) -> torch.Tensor: ...

    def with_block(self, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor: ...

    def unbounded(self, S: torch.Tensor, tiny: float) -> bool: ...


@dataclass(frozen=True)
class ImportantLinks:
    """Groups Δ_{I,j} for j ∈ J: the links of each non-important node to the important set.

    ``important`` (I) and ``rest`` (J, its complement) are sorted long tensors.
    """

    important: torch.Tensor
    rest: torch.Tensor

    @classmethod
    def of(cls, important: torch.Tensor, p: int) -> ImportantLinks:
        """I (any order) and J = {0..p−1} \\ I, both sorted, on ``important``'s device."""
        important = torch.sort(important).values
        mask = torch.ones(p, dtype=torch.bool, device=important.device)
        mask[important] = False
        return cls(important, torch.nonzero(mask).flatten())

    @property
    def has_groups(self) -> bool:
        return self.rest.numel() > 0 and self.important.numel() > 0

    def block(self, a: torch.Tensor) -> torch.Tensor:
        """A_{I,J}: the |I| × |J| block whose columns are the groups."""
        return a.index_select(-2, self.important).index_select(-1, self.rest)

    def with_block(self, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """A copy of A with A_{I,J} replaced by ``block`` (A_{J,I} left as it is)."""
        out = a.clone()
        out[self.important.unsqueeze(-1), self.rest.unsqueeze(0)] = block
        return out

    def with_symmetric_block(self, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """A copy of A with A_{I,J} = ``block`` and A_{J,I} = ``block``ᵀ."""
        out = self.with_block(a, block)
        out[self.rest.unsqueeze(-1), self.important.unsqueeze(0)] = block.transpose(-1, -2)
        return out

    def unbounded(self, S: torch.Tensor, tiny: float) -> bool:
        """S_II or S_JJ has an eigenvalue ≤ ``tiny``.

        A null vector v of S (S ⪰ 0, so vᵀSv = 0 ⇔ Sv = 0) supported on I alone or on J alone
        leaves every penalised block v_I v_Jᵀ = 0, so Ω + t vvᵀ lowers F without bound as
        t → ∞. Conversely a growth direction in span(null S) with zero I×J block must be of
        that form. Penalised directions cost ~t^g against the −log t gain: harmless.
        """
        for idx in (self.important, self.rest):
            if idx.numel() == 0:
                continue
            sub = S.index_select(0, idx).index_select(1, idx)
            if float(torch.linalg.eigvalsh(sub)[0]) <= tiny:
                return True
        return False


@dataclass(frozen=True)
class OffDiagonalColumns:
    """Groups Δ_{−j,j} for every column j: each column's off-diagonal entries.

    ``block`` keeps the p × p layout with a zero diagonal (a zero entry changes no group norm).
    """

    @property
    def has_groups(self) -> bool:
        return True

    def block(self, a: torch.Tensor) -> torch.Tensor:
        return offdiag(a)

    def with_block(self, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """``block`` off the diagonal, A's diagonal on it."""
        return offdiag(block) + torch.diag_embed(a.diagonal(dim1=-2, dim2=-1))

    def unbounded(self, S: torch.Tensor, tiny: float) -> bool:
        """Some S_ii ≤ ``tiny``: only diagonal directions escape the penalty."""
        return bool((torch.diagonal(S) <= tiny).any())


@dataclass
class L2gProblem:
    """A validated instance: S (already regularised), the group structure and the weights."""

    S: torch.Tensor
    groups: ImportantLinks | OffDiagonalColumns
    tau: float
    lam: float
    g: float
    gst_iters: int | None = None  # None: exact GST; 5 reproduces the released code

    @property
    def w(self) -> float:
        """Weight of the Δ-step prox: min τ‖d‖^g + λ‖v − d‖² = 2λ[½‖v − d‖² + (τ/2λ)‖d‖^g]."""
        return self.tau / (2.0 * self.lam)


@dataclass
class MethodOutput:
    """What every method in the registry returns to ``l2g_ggm``."""

    omega: torch.Tensor
    delta: torch.Tensor
    objective: float
    history: list[float]
    n_iter: int
    converged: bool
    stationarity: float
    extra: dict = field(default_factory=dict)


def _unbounded(S: torch.Tensor, groups: GroupStructure) -> bool:
    """True when F is unbounded below for this S: a direction the penalty does not see is
    numerically singular (eigenvalue ≤ sqrt(machine eps) · λ_max(S))."""
    tiny = math.sqrt(torch.finfo(S.dtype).eps) * float(torch.linalg.eigvalsh(S)[-1].clamp_min(0))
    return groups.unbounded(S, tiny)


def default_ridge(S: torch.Tensor) -> float:
    """ε = DEFAULT_RIDGE · tr(S)/p (DEFAULT_RIDGE itself when tr S = 0)."""
    trace = float(torch.diagonal(S).sum())
    return DEFAULT_RIDGE * trace / S.shape[-1] if trace > 0 else DEFAULT_RIDGE


def resolve_regularization(S: torch.Tensor, groups: GroupStructure,
                           regularization: Any) -> tuple[float, bool]:
    """Return (ε, automatic) for the ridge S + εI; raise ValueError if refused but needed.

    ``"auto"``: ε = DEFAULT_RIDGE · tr(S)/p when F would be unbounded below (S_II or S_JJ
    numerically singular; without important nodes: a zero variance), else 0. A number ≥ 0:
    exactly that ε. ``None``/0: no ridge, and a ``ValueError`` if the problem is unbounded.
    """
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', a number >= 0 or None, got {regularization!r}")
        return (default_ridge(S) if _unbounded(S, groups) else 0.0), True
    if regularization is None:
        eps = 0.0
    else:
        try:
            eps = float(regularization)
        except (TypeError, ValueError):
            raise ValueError(
                f"regularization must be 'auto', a number >= 0 or None, got {regularization!r}"
            ) from None
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"regularization must be a finite number >= 0, got {regularization!r}")
    if eps == 0.0 and _unbounded(S, groups):
        raise ValueError(
            "S is singular on the important or the non-important nodes (S_II or S_JJ has a "
            "null vector; without important nodes: a zero variance S_ii), so F is unbounded "
            "below (−log det Ω → −∞ along that direction at no cost); pass "
            "regularization='auto' or a ridge ε > 0 (S + εI)"
        )
    return eps, False
