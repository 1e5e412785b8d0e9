"""Model glue: find target layers, swap in PC layers, list nodes, save / load / merge.

``get_graphopt_model(model, config)`` modifies ``model`` in place (like Hugging Face peft):
every target ``nn.Linear`` / ``Conv1D`` becomes a :class:`~graphopt.peft.layers.PCLayer`,
every other parameter is frozen except the task head (``config.modules_to_save``), which
always trains. The returned :class:`GraphoptModel` delegates ``forward`` to the model.

Node order (the column order of the score matrix X and of every selection): target modules
in ``model.named_modules()`` order; inside a module its r PC nodes i = 0..r−1, then its bias
node when ``bias_nodes=True``.

Adapter format (``save_adapter``): ``adapter_model.safetensors`` holds, per target module
``m``, the trained ``m.a`` (r × d_out, rows a_i) and ``m.b`` (r × d_in, rows b_i), the initial
factors ``m.a0`` / ``m.b0`` that W_res was built from (so loading rebuilds W_res = W − A⁰B⁰
without an SVD, independent of sign conventions and LAPACK), ``m.bias`` for bias nodes, and
``head.<param>`` for the head. ``adapter_config.json`` holds the config, the node names, the
frozen nodes and a fingerprint of the base model (architecture, target names and shapes, and a
dtype-tolerant checksum of each target's frozen base weight).
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt._atomic import atomic_paths
from graphopt.peft.config import QKV_SUFFIXES, GGMConfig
from graphopt.peft.layers import PCLayer, is_linear_like, linear_weight

__all__ = ["AdapterNode", "GraphoptModel", "get_graphopt_model", "load_adapter",
           "find_target_modules", "find_head_modules", "CONFIG_FILE", "WEIGHTS_FILE",
           "HEAD_NAMES"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "graphopt-pc-adapter"
FORMAT_VERSION = 1
#: Task heads detected when ``modules_to_save`` is None (BERT/RoBERTa/DistilBERT/GPT-2).
HEAD_NAMES = ("classifier", "score", "pre_classifier")
#: Relative tolerance of the base-weight checksum: loose enough for a float32 checkpoint
#: loaded in bfloat16, far too tight for a different set of weights to pass.
_CHECKSUM_RTOL = 2e-3


@dataclass(frozen=True, eq=False)
class AdapterNode:
    """One trainable node of the adapter: a principal component (a_i, b_i) or a bias vector."""

    index: int
    name: str           # "<module>:pc<i>" or "<module>:bias"
    module_name: str
    kind: str           # "pc" | "bias"
    params: tuple[nn.Parameter, ...]

    @property
    def trainable(self) -> bool:
        return all(p.requires_grad for p in self.params)


def _matches_suffix(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and is_linear_like(m)]


def find_head_modules(model: nn.Module, modules_to_save: Sequence[str] | None) -> list[str]:
    """Module names trained in full: ``modules_to_save`` suffixes, or the auto-detected head.

    Raises ValueError naming any ``modules_to_save`` entry that matches no module.
    """
    names = [n for n, _ in model.named_modules() if n]
    if modules_to_save is None:
        found = [n for n in names if n.split(".")[-1] in HEAD_NAMES]
    else:
        found = []
        for s in modules_to_save:
            hits = [n for n in names if _matches_suffix(n, s)]
            if not hits:
                top = sorted({n.split(".")[0] for n in names})
                raise ValueError(f"modules_to_save entry {s!r} matches no module; top-level "
                                 f"modules: {top}")
            found.extend(hits)
    # Keep only outermost heads (classifier.dense lives inside classifier).
    found = sorted(set(found), key=names.index)
    return [n for n in found if not any(n.startswith(h + ".") for h in found if h != n)]


def find_target_modules(model: nn.Module, target_modules: str | Sequence[str],
                        heads: Sequence[str] = ()) -> list[str]:
    """Names of the Linear/Conv1D modules to wrap, in ``named_modules`` order.

    Heads (and anything inside them) and ``lm_head`` are never targets. Raises ValueError
    listing the available linear module names when a suffix, or the whole spec, matches
    nothing — there is no silent fallback.
    """
    def in_head(n: str) -> bool:
        return any(n == h or n.startswith(h + ".") for h in heads) or _matches_suffix(n, "lm_head")

    linear = [n for n in _linear_names(model) if not in_head(n)]
    if isinstance(target_modules, str) and target_modules == "all-linear":
        found = linear
    elif isinstance(target_modules, str) and target_modules.startswith("re:"):
        rx = re.compile(target_modules[3:])
        found = [n for n in linear if rx.fullmatch(n)]
    else:
        suffixes = QKV_SUFFIXES if target_modules == "qkv" else list(target_modules)
        found = [n for n in linear if any(_matches_suffix(n, s) for s in suffixes)]
        if target_modules != "qkv":
            missing = [s for s in suffixes if not any(_matches_suffix(n, s) for n in linear)]
            if missing:
                raise ValueError(f"target_modules {missing} match no nn.Linear/Conv1D module; "
                                 f"available linear modules: {linear}")
    if not found:
        raise ValueError(f"target_modules={target_modules!r} matches no nn.Linear/Conv1D "
                         f"module; available linear modules: {linear}")
    return found


def _checksum(weight: torch.Tensor) -> list[float]:
    """A dtype-tolerant fingerprint of W: [‖W‖_F, ‖W v‖₂, uᵀ W v] for fixed deterministic u, v.

    v_j = cos(0.7 j + 0.3), u_i = sin(1.3 i + 0.1): no RNG, identical on every machine.
    """
    w = weight.detach().to(torch.float64)
    v = torch.cos(0.7 * torch.arange(w.shape[1], dtype=torch.float64, device=w.device) + 0.3)
    u = torch.sin(1.3 * torch.arange(w.shape[0], dtype=torch.float64, device=w.device) + 0.1)
    wv = w @ v
    return [float(torch.linalg.norm(w)), float(torch.linalg.norm(wv)), float(u @ wv)]


def _fingerprint(model: nn.Module, targets: Sequence[str]) -> dict[str, Any]:
    mods = dict(model.named_modules())
    hf_config = getattr(model, "config", None)
    entries = {}
    for n in targets:
        w = linear_weight(mods[n])
        entries[n] = {"shape": list(w.shape), "checksum": _checksum(w)}
    return {"architecture": type(model).__name__,
            "model_type": getattr(hf_config, "model_type", None),
            "targets": entries}


def _check_fingerprint(saved: dict[str, Any], current: dict[str, Any], source: Path) -> None:
    """Raise ValueError (naming ``source``, the config file) unless ``saved`` fits ``current``."""
    where = f"{source}: the adapter"
    try:
        s_arch, s_t = saved["architecture"], dict(saved["targets"])
        s_shapes = {n: list(e["shape"]) for n, e in s_t.items()}
        s_sums = {n: [float(x) for x in e["checksum"]] for n, e in s_t.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: the base-model fingerprint is malformed ({exc!r})") from None
    if s_arch != current["architecture"]:
        raise ValueError(f"{where} was saved for a {s_arch}, got a {current['architecture']}")
    c_t = current["targets"]
    if list(s_t) != list(c_t):
        raise ValueError(f"{where} targets modules {list(s_t)} but this model's matching "
                         f"modules are {list(c_t)}")
    for n in s_t:
        if s_shapes[n] != c_t[n]["shape"]:
            raise ValueError(f"{where}: module {n} had weight shape {s_shapes[n]}, this "
                             f"model's is {c_t[n]['shape']}")
        if len(s_sums[n]) != len(c_t[n]["checksum"]):
            raise ValueError(f"{source}: the base-model fingerprint of {n} is malformed "
                             f"({len(s_sums[n])} checksum values, expected "
                             f"{len(c_t[n]['checksum'])})")
        for a, b in zip(s_sums[n], c_t[n]["checksum"]):
            scale = max(abs(a), abs(b), s_sums[n][0] * 1e-6, 1e-30)
            if not abs(a - b) <= _CHECKSUM_RTOL * scale:
                raise ValueError(f"{where}: the base weight of {n} differs from the one the "
                                 "adapter was trained on (checksum mismatch): it was saved "
                                 "for another model or checkpoint")


class GraphoptModel(nn.Module):
    """A Hugging Face (or any torch) model whose target layers are PC layers.

    Attributes
    ----------
    base_model : the wrapped model (modified in place).
    config : the :class:`GGMConfig`.
    nodes : every node, in the documented order.
    target_names, head_names : wrapped module names and fully trained module names.
    """

    def __init__(self, model: nn.Module, config: GGMConfig, *,
                 init: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        if not isinstance(config, GGMConfig):
            raise TypeError(f"config must be a GGMConfig, got {type(config).__name__}")
        self.config = config
        heads = find_head_modules(model, config.modules_to_save)
        targets = find_target_modules(model, config.target_modules, heads)
        self.fingerprint = _fingerprint(model, targets)
        self._requires_grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        for n in targets:
            parent_name, _, child = n.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            layer = PCLayer(getattr(parent, child), config.rank_for(n),
                            bias_node=config.bias_nodes,
                            init=None if init is None else init[n], name=n)
            setattr(parent, child, layer)
        for h in heads:
            for p in model.get_submodule(h).parameters():
                p.requires_grad_(True)
        self.base_model = model
        self.target_names = list(targets)
        self.head_names = list(heads)
        self.nodes = self._collect_nodes()
        self._merged = False

    def _collect_nodes(self) -> list[AdapterNode]:
        nodes: list[AdapterNode] = []
        for n in self.target_names:
            layer = self.base_model.get_submodule(n)
            for i, (kind, params) in enumerate(layer.node_parameters()):
                label = f"{n}:pc{i}" if kind == "pc" else f"{n}:bias"
                nodes.append(AdapterNode(len(nodes), label, n, kind, params))
        return nodes

    # -- nn.Module plumbing ---------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Delegate to the wrapped model."""
        if self._merged:
            raise RuntimeError("this GraphoptModel was merged and unloaded; use the model "
                               "merge_and_unload() returned")
        return self.base_model(*args, **kwargs)

    def pc_layers(self) -> dict[str, PCLayer]:
        """Target module name -> its PCLayer."""
        return {n: self.base_model.get_submodule(n) for n in self.target_names}

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def head_parameters(self) -> dict[str, nn.Parameter]:
        """Full name -> parameter of every head module (always trained, always saved)."""
        out = {}
        for h in self.head_names:
            for pn, p in self.base_model.get_submodule(h).named_parameters():
                out[f"{h}.{pn}"] = p
        return out

    # -- trainability --------------------------------------------------------------------
    def train_only_nodes(self, keep: Sequence[int]) -> None:
        """Keep only the nodes with these indices trainable; freeze all others exactly.

        A frozen node gets ``requires_grad=False`` and its ``.grad`` is dropped, so an
        optimiser built earlier over all nodes skips it (no gradient, no momentum, no weight
        decay): the optimiser does not need to be rebuilt. Under DDP wrap the model with
        ``find_unused_parameters=True``.
        """
        keep_set = set()
        for k in keep:
            try:
                k = operator.index(k)
            except TypeError:
                raise TypeError(f"keep must hold integer node indices, got {k!r}") from None
            if not 0 <= k < len(self.nodes):
                raise ValueError(f"keep holds node index {k}, valid indices are "
                                 f"0..{len(self.nodes) - 1}")
            keep_set.add(k)
        for node in self.nodes:
            on = node.index in keep_set
            for p in node.params:
                p.requires_grad_(on)
                if not on:
                    p.grad = None

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameter counts of the wrapped model."""
        params = list(self.base_model.parameters())
        return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))

    def print_trainable_parameters(self) -> None:
        """Print trainable / total parameters and trainable nodes, HF-peft style."""
        t, n = self.trainable_parameter_count()
        live = sum(node.trainable for node in self.nodes)
        print(f"trainable params: {t:,} || all params: {n:,} || trainable%: {100 * t / max(n, 1):.4f}"
              f" || trainable nodes: {live}/{len(self.nodes)}")

    # -- save / merge ----------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors ``save_adapter`` writes (detached, contiguous)."""
        state: dict[str, torch.Tensor] = {}
        for n, layer in self.pc_layers().items():
            a, b = layer.factors()
            state[f"{n}.a"] = a.t().detach().contiguous()
            state[f"{n}.b"] = b.detach().contiguous()
            state[f"{n}.a0"] = layer.a0.detach().contiguous()
            state[f"{n}.b0"] = layer.b0.detach().contiguous()
            if layer.has_bias_node:
                state[f"{n}.bias"] = layer.base_layer.bias.detach().contiguous()
        for pn, p in self.head_parameters().items():
            state[f"head.{pn}"] = p.detach().contiguous()
        return state

    def save_adapter(self, directory: str | os.PathLike[str]) -> None:
        """Write ``adapter_model.safetensors`` + ``adapter_config.json`` into ``directory``.

        Atomic per file (written to a temp file in the same directory, fsynced, then
        ``os.replace``d); both files carry the same ``save_id`` so ``load_adapter`` detects a
        torn pair. Other files in ``directory`` (an allocation, metrics) are left alone.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_id = uuid.uuid4().hex
        state = {k: v.cpu() for k, v in self.adapter_state().items()}
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "save_id": save_id,
            "config": self.config.to_dict(), "fingerprint": self.fingerprint,
            "target_modules": self.target_names, "head_modules": self.head_names,
            "node_names": self.node_names,
            "frozen_nodes": [n.index for n in self.nodes if not n.trainable],
            "dtype": str(next(iter(state.values())).dtype) if state else None,
        }
        # Weights replaced first, config last: the config names the save_id the weights
        # must carry, so a crash between the two is caught by load_adapter as a torn pair.
        with atomic_paths(directory / WEIGHTS_FILE, directory / CONFIG_FILE) as (w_tmp, c_tmp):
            save_file(state, str(w_tmp), metadata={"save_id": save_id, "format": FORMAT})
            c_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def merge_and_unload(self) -> nn.Module:
        """Fold W = W_res + A B into each original Linear/Conv1D and return the plain model.

        Outputs equal the adapted model's (to floating-point rounding); the parameters get
        back the ``requires_grad`` flags they had before wrapping (bias nodes and head kept
        their trained values). This GraphoptModel is unusable afterwards.
        """
        for n in self.target_names:
            parent_name, _, child = n.rpartition(".")
            parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
            setattr(parent, child, getattr(parent, child).merge())
        for pn, p in self.base_model.named_parameters():
            p.requires_grad_(self._requires_grad_before.get(pn, True))
        self._merged = True
        return self.base_model


def get_graphopt_model(model: nn.Module, config: GGMConfig | None = None) -> GraphoptModel:
    """Split the target weights of ``model`` (in place) into PC nodes; return the wrapper.

    For each target W: W = W_res + Σ_{i<r} a_i b_iᵀ with a_i = U[:, i], b_i = s_i V[:, i]
    (top-r SVD); W_res and all non-head parameters are frozen. At initialisation the outputs
    equal those of the unmodified model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(isinstance(m, PCLayer) for m in model.modules()):
        raise ValueError("model already contains PC layers (get_graphopt_model was applied)")
    return GraphoptModel(model, config if config is not None else GGMConfig())


#: Keys every adapter config must hold (``frozen_nodes`` may be absent: nothing frozen).
_REQUIRED_META = ("save_id", "config", "fingerprint", "head_modules", "node_names")


def _read_adapter(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Both adapter files, parsed; FileNotFoundError / ValueError naming the file at fault."""
    from safetensors import SafetensorError, safe_open

    if not directory.is_dir():
        raise FileNotFoundError(f"adapter directory {directory} does not exist")
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / f).is_file():
            raise FileNotFoundError(f"adapter file {directory / f} is missing")
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a graphopt PC adapter config "
                         f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{config_path} has format_version {version!r}, this graphopt reads "
                         f"integers <= {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"{config_path} lacks the entries {missing}")
    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            file_meta = fh.metadata() or {}
            if file_meta.get("save_id") != meta.get("save_id"):
                raise ValueError(f"{weights_path} and {config_path} come from different saves "
                                 "(save_id mismatch)")
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{weights_path} is not a readable safetensors file (corrupted or "
                         f"truncated?): {exc}") from exc
    return meta, state


def _expected_adapter(model: nn.Module, config: GGMConfig, targets: Sequence[str],
                      heads: Sequence[str]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """(tensor name -> shape, node names) that ``GraphoptModel(model, config)`` would save.

    Computed from the unmodified model, so that a saved adapter can be checked in full before
    any layer is swapped: per target with W of shape (d_out, d_in) and r = ``rank_for``:
    ``a``, ``a0`` (r, d_out), ``b``, ``b0`` (r, d_in), ``bias`` (d_out,) when it is a node.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    names: list[str] = []
    for n in targets:
        module = model.get_submodule(n)
        d_out, d_in = linear_weight(module).shape
        r = config.rank_for(n)
        shapes.update({f"{n}.a": (r, d_out), f"{n}.a0": (r, d_out),
                       f"{n}.b": (r, d_in), f"{n}.b0": (r, d_in)})
        names.extend(f"{n}:pc{i}" for i in range(r))
        bias = getattr(module, "bias", None)
        if config.bias_nodes and bias is not None:
            shapes[f"{n}.bias"] = tuple(bias.shape)
            names.append(f"{n}:bias")
    for h in heads:
        for pn, p in model.get_submodule(h).named_parameters():
            shapes[f"head.{h}.{pn}"] = tuple(p.shape)
    return shapes, names


def _validate_adapter(model: nn.Module, meta: dict[str, Any], state: dict[str, torch.Tensor],
                      directory: Path) -> tuple[GGMConfig, list[str], list[int]]:
    """Check a read adapter against the unmodified ``model``; return (config, target module
    names, frozen node indices).

    Raises ValueError naming the file and what does not fit; ``model`` is only read.
    """
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    try:
        config = GGMConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_path}: invalid config: {exc}") from exc
    try:
        heads = find_head_modules(model, config.modules_to_save)
        targets = find_target_modules(model, config.target_modules, heads)
    except ValueError as exc:
        raise ValueError(f"{config_path}: the adapter does not fit this model: {exc}") from exc
    _check_fingerprint(meta["fingerprint"], _fingerprint(model, targets), config_path)
    if heads != meta["head_modules"]:
        raise ValueError(f"{config_path}: the adapter trains head modules "
                         f"{meta['head_modules']}, this model's are {heads}")
    shapes, node_names = _expected_adapter(model, config, targets, heads)
    if meta["node_names"] != node_names:
        saved = meta["node_names"] if isinstance(meta["node_names"], list) else []
        unknown = [n for n in saved if n not in set(node_names)]
        absent = [n for n in node_names if n not in set(saved)]
        raise ValueError(f"{config_path}: the adapter's node names do not match the nodes this "
                         f"model gets (unknown: {unknown[:5]}, missing: {absent[:5]}"
                         f"{', same names in another order' if not unknown + absent else ''})")
    if set(state) != set(shapes):
        raise ValueError(f"{weights_path} does not fit this model: missing tensors "
                         f"{sorted(set(shapes) - set(state))[:5]}, unexpected "
                         f"{sorted(set(state) - set(shapes))[:5]}")
    for k, shape in shapes.items():
        t = state[k]
        if tuple(t.shape) != shape:
            raise ValueError(f"{weights_path}: tensor {k} has shape {tuple(t.shape)}, this "
                             f"model needs {shape}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{weights_path}: tensor {k} has dtype {t.dtype}, expected a "
                             "floating-point dtype")
    frozen = meta.get("frozen_nodes", [])
    if (not isinstance(frozen, list)
            or not all(type(i) is int and 0 <= i < len(node_names) for i in frozen)):
        raise ValueError(f"{config_path}: frozen_nodes must be node indices in "
                         f"0..{len(node_names) - 1}, got {frozen!r}")
    return config, targets, frozen


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> GraphoptModel:
    """Apply a saved adapter to a fresh base ``model``; return the GraphoptModel.

    Everything is validated before the model is changed, against what wrapping this model
    would produce: both files exist (FileNotFoundError naming the missing one), they are
    readable and come from the same save, and the config, the architecture, target names,
    shapes and base-weight checksums, the head, the node names and every tensor's name, shape
    and dtype fit (ValueError naming the file and the mismatch otherwise). A rejected load
    leaves ``model`` exactly as it was. W_res is rebuilt from the stored A⁰, B⁰ — no SVD.
    Files are only read. Nodes that were frozen when saved are frozen again.
    """
    directory = Path(directory)
    meta, state = _read_adapter(directory)
    config, targets, frozen = _validate_adapter(model, meta, state, directory)
    # From here on the model changes; everything that could reject the adapter ran above.
    init = {n: (state[f"{n}.a0"], state[f"{n}.b0"]) for n in targets}
    wrapped = GraphoptModel(model, config, init=init)
    with torch.no_grad():
        for n, layer in wrapped.pc_layers().items():
            a, b = state[f"{n}.a"], state[f"{n}.b"]
            for i in range(layer.rank):
                layer.pc_a[i].copy_(a[i])
                layer.pc_b[i].copy_(b[i])
            if layer.has_bias_node:
                layer.base_layer.bias.copy_(state[f"{n}.bias"])
        for k, p in wrapped.head_parameters().items():
            p.copy_(state[f"head.{k}"])
    frozen_set = set(frozen)
    wrapped.train_only_nodes([i for i in range(len(wrapped.nodes)) if i not in frozen_set])
    return wrapped


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (used by tests and tools to prove files were left untouched)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

