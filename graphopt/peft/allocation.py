"""From node importance samples to the nodes that keep training (docs/algorithms.md §2-§3).

Pipeline for the ``"ggm"`` policy, with X the (T × n) sample matrix:

    Z = rownorm(max(log X, −200))            log scores, each row scaled to unit ℓ2 norm
    S = (Z − 1 z̄ᵀ)ᵀ (Z − 1 z̄ᵀ) / (T − 1)     sample covariance over nodes (z̄ = column means)
    I = top-k nodes by z̄                      important nodes
    (Ω, Δ) = l2g_ggm(S, I, τ, λ, g)           graphopt.solvers.l2g
    keep I ∪ {the K − k nodes j ∉ I with the largest ‖Ω_{I,j}‖₂ (or ‖Δ_{I,j}‖₂)}

With ``groups="all"`` (ablation without important nodes) I = ∅, the penalty groups are
every column's off-diagonal part and the K nodes with the largest ‖Ω_{−j,j}‖₂ are kept.

Baselines with the same budget K: ``"random"`` (seeded uniform draw), ``"top-importance"``
(the K largest z̄), and ``"none"`` (pc-all: every node stays). One function per policy,
dispatched by a table; every policy returns an :class:`Allocation`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphopt._atomic import atomic_path, atomic_write_json
from graphopt._linalg import symmetrize
from graphopt.peft.config import GGMConfig

__all__ = ["Allocation", "allocate", "normalised_log_scores", "sample_covariance",
           "important_nodes", "POLICIES", "ALLOCATION_JSON", "ALLOCATION_TENSORS", "LOG_FLOOR"]

ALLOCATION_JSON = "allocation.json"
ALLOCATION_TENSORS = "allocation.safetensors"
#: log 0 = −inf is clipped to this value (the released code's choice).
LOG_FLOOR = -200.0


def normalised_log_scores(samples: torch.Tensor) -> torch.Tensor:
    """Z: log X with −inf → −200, then each row (one step) scaled to unit ℓ2 norm (float64)."""
    z = torch.log(samples.to(torch.float64)).clamp_min(LOG_FLOOR)
    return z / torch.linalg.norm(z, dim=1, keepdim=True)


def sample_covariance(z: torch.Tensor) -> torch.Tensor:
    """S = Z_cᵀ Z_c / (T − 1), Z_c = Z with centred columns; needs T ≥ 2 rows."""
    if z.shape[0] < 2:
        raise ValueError(f"the covariance needs at least 2 scoring steps, got {z.shape[0]}")
    zc = z - z.mean(dim=0, keepdim=True)
    s = zc.T @ zc / (z.shape[0] - 1)
    return symmetrize(s)


def important_nodes(z: torch.Tensor, k: int) -> list[int]:
    """The k nodes with the largest column mean of Z (ties: smaller index first), sorted."""
    means = z.mean(dim=0).cpu().numpy()
    order = np.argsort(-means, kind="stable")
    return sorted(int(i) for i in order[:k])


@dataclass
class Allocation:
    """Which nodes keep training, and the evidence for it.

    Attributes
    ----------
    policy : "ggm" | "random" | "top-importance" | "none".
    selected : sorted indices of the nodes kept trainable.
    important : the important set I (empty for "random").
    node_names : names of all n nodes (column order of ``samples``).
    scores : per-node importance z̄ (column means of Z); empty when there were no samples.
    samples : X, the raw (T × n) samples.
    omega, delta : the solver's Ω and Δ ((n × n), "ggm" only).
    link_scores : c_j = ‖M_{I,j}‖₂ per node (NaN on I), "ggm" only.
    regularization : ε the solver added to S (0.0 when none).
    solver : convergence evidence (converged, stationarity, n_iter, method, objective).
    step : the optimiser step at which the selection was made.
    config : the GGMConfig (as a dict) that produced it.
    """

    policy: str
    selected: list[int]
    important: list[int]
    node_names: list[str]
    scores: np.ndarray
    samples: np.ndarray
    omega: np.ndarray | None = None
    delta: np.ndarray | None = None
    link_scores: np.ndarray | None = None
    regularization: float = 0.0
    solver: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    config: dict[str, Any] = field(default_factory=dict)

    _ARRAYS = ("scores", "samples", "omega", "delta", "link_scores")

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``allocation.json`` and ``allocation.safetensors`` (atomically, per file)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(self, k) for k in ("policy", "selected", "important", "node_names",
                                               "regularization", "solver", "step", "config")}
        arrays = {k: np.ascontiguousarray(getattr(self, k), dtype=np.float64)
                  for k in self._ARRAYS if getattr(self, k) is not None}
        meta["arrays"] = sorted(arrays)
        with atomic_path(directory / ALLOCATION_TENSORS) as tmp:
            save_file(arrays, str(tmp))
        atomic_write_json(directory / ALLOCATION_JSON, meta)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "Allocation":
        """Read an allocation written by :meth:`save` (FileNotFoundError names a missing file)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        for f in (ALLOCATION_JSON, ALLOCATION_TENSORS):
            if not (directory / f).is_file():
                raise FileNotFoundError(f"allocation file {directory / f} is missing")
        meta = json.loads((directory / ALLOCATION_JSON).read_text())
        arrays = load_file(str(directory / ALLOCATION_TENSORS))
        names = meta.pop("arrays")
        kwargs = {k: arrays[k] for k in names}
        return cls(**meta, **kwargs)

    def to_state(self) -> dict[str, Any]:
        """The allocation as a plain dict of lists, numbers and arrays (for a checkpoint)."""
        return {k: getattr(self, k) for k in (f.name for f in fields(self))}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Allocation":
        """Inverse of :meth:`to_state`."""
        return cls(**state)

    def selected_per_module(self) -> dict[str, tuple[int, int]]:
        """Module name -> (selected nodes, nodes) — the numbers the heat-map shows."""
        out: dict[str, list[int]] = {}
        chosen = set(self.selected)
        for i, name in enumerate(self.node_names):
            module, _, kind = name.rpartition(":")
            key = module + (":bias" if kind == "bias" else "")
            cell = out.setdefault(key, [0, 0])
            cell[0] += i in chosen
            cell[1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG heat-map: rows = layers, columns = matrices, cell = selected / nodes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cells: dict[tuple[str, str], tuple[int, int]] = {}
        for module, counts in self.selected_per_module().items():
            m = re.search(r"\.(\d+)\.", module)
            layer, matrix = (m.group(1), module[m.end():]) if m else ("other", module)
            cells[(layer, matrix)] = counts
        layers = sorted({k[0] for k in cells}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0))
        matrices = list(dict.fromkeys(k[1] for k in cells))
        grid = np.full((len(layers), len(matrices)), np.nan)
        for (layer, matrix), (sel, tot) in cells.items():
            grid[layers.index(layer), matrices.index(matrix)] = sel / tot
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(matrices), 1.2 + 0.45 * len(layers)))
        im = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for (layer, matrix), (sel, tot) in cells.items():
            ax.text(matrices.index(matrix), layers.index(layer), f"{sel}/{tot}", ha="center",
                    va="center", color="white" if sel / tot < 0.6 else "black", fontsize=8)
        ax.set_xticks(range(len(matrices)), [m.replace("attention.", "") for m in matrices],
                      rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [f"layer {s}" for s in layers], fontsize=8)
        ax.set_title(f"{self.policy}: {len(self.selected)}/{len(self.node_names)} nodes kept",
                     fontsize=9)
        fig.colorbar(im, ax=ax, label="fraction of nodes selected")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _check_samples(samples: Any, n: int, config: GGMConfig) -> torch.Tensor:
    x = samples if isinstance(samples, torch.Tensor) else torch.as_tensor(np.asarray(samples))
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"samples must have shape (T, {n}) (one column per node), got "
                         f"{tuple(x.shape)}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise ValueError("samples must be finite and non-negative (they are s_t = Ī ⊙ Ū)")
    return x


def _policy_ggm(x: torch.Tensor, config: GGMConfig) -> dict[str, Any]:
    from graphopt.solvers.l2g import l2g_ggm, resolve_l2g_method
    from graphopt.solvers.selection import select_nodes

    z = normalised_log_scores(x)
    s = sample_covariance(z)
    # groups="all" is the ablation without important nodes (I = ∅, every column one group).
    important = important_nodes(z, config.n_important) if config.groups == "important" else None
    # With T < n samples S is singular: the solver adds a ridge (RegularizationWarning, left
    # visible to the user) and reports the ε, which the Allocation records.
    method = resolve_l2g_method(omega_step=config.omega_step, with_important=important is not None)
    result = l2g_ggm(s, important, tau=config.tau, lam=config.lam, g=config.g, method=method,
                     regularization=config.regularization)
    m = result.precision if config.select_by == "omega" else result.delta
    chosen = select_nodes(m, important, config.n_select)
    return dict(selected=[int(i) for i in chosen.selected], important=important or [],
                scores=z.mean(dim=0).cpu().numpy(), omega=result.precision.cpu().numpy(),
                delta=result.delta.cpu().numpy(), link_scores=chosen.scores,
                regularization=float(result.regularization),
                solver={"converged": result.converged, "stationarity": result.stationarity,
                        "n_iter": result.n_iter, "method": result.method,
                        "objective": result.objective})


def _policy_random(x: torch.Tensor, config: GGMConfig) -> dict[str, Any]:
    n = x.shape[1]
    rng = np.random.default_rng(config.seed)
    picked = rng.choice(n, size=config.n_select, replace=False)
    scores = normalised_log_scores(x).mean(dim=0).cpu().numpy() if x.shape[0] else np.zeros(0)
    return dict(selected=sorted(int(i) for i in picked), important=[], scores=scores)


def _policy_top_importance(x: torch.Tensor, config: GGMConfig) -> dict[str, Any]:
    if x.shape[0] < 1:
        raise ValueError("top-importance needs at least 1 scoring step, got 0")
    z = normalised_log_scores(x)
    return dict(selected=important_nodes(z, config.n_select),
                important=important_nodes(z, config.n_important),
                scores=z.mean(dim=0).cpu().numpy())


def _policy_none(x: torch.Tensor, config: GGMConfig) -> dict[str, Any]:
    if x.shape[0] == 0:
        return dict(selected=list(range(x.shape[1])), important=[], scores=np.zeros(0))
    z = normalised_log_scores(x)
    return dict(selected=list(range(x.shape[1])),
                important=important_nodes(z, min(config.n_important, x.shape[1])),
                scores=z.mean(dim=0).cpu().numpy())


#: policy name -> function(samples, config) -> Allocation fields
POLICIES: dict[str, Callable[[torch.Tensor, GGMConfig], dict[str, Any]]] = {
    "ggm": _policy_ggm,
    "random": _policy_random,
    "top-importance": _policy_top_importance,
    "none": _policy_none,
}


def allocate(samples: torch.Tensor | np.ndarray, node_names: Sequence[str],
             config: GGMConfig, *, step: int | None = None) -> Allocation:
    """Run ``config.selection`` on the (T × n) samples X and return the Allocation.

    Raises ValueError for a malformed X, n_select > n, or too few scoring steps
    (the covariance needs T ≥ 2).
    """
    if not isinstance(config, GGMConfig):
        raise TypeError(f"config must be a GGMConfig, got {type(config).__name__}")
    node_names = list(node_names)
    x = _check_samples(samples, len(node_names), config)
    config.check_node_budget(len(node_names))
    fields = POLICIES[config.selection](x, config)
    return Allocation(policy=config.selection, node_names=node_names,
                      samples=x.cpu().numpy(), step=step, config=config.to_dict(), **fields)
