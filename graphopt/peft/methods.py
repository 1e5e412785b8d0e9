"""The fine-tuning methods of ``graphopt finetune --method``: one builder per name.

Every builder takes the loaded Hugging Face model and returns a :class:`PreparedModel`
(the module to call, which parameters train, the optional GGM allocator, how to save):

- ``ggm``            principal-component nodes, AdaLoRA scores, ℓ2,g-GGM selection (published)
- ``pc-all``         the same nodes, all trained, no scoring or selection
- ``random``         the same nodes and schedule, ``n_select`` nodes drawn at random
- ``top-importance`` the same nodes and schedule, the ``n_select`` best-scored nodes
- ``bitfit``         every bias vector plus the task head
- ``full``           every parameter
- ``lora``/``pissa`` Hugging Face ``peft`` (optional extra ``graphopt[baselines]``),
                     r = 8 on the attention query and value projections
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from graphopt.peft.config import GGMConfig

__all__ = ["MethodOptions", "PreparedModel", "METHODS", "METHOD_NAMES", "DEFAULT_LR",
           "prepare_method", "import_hf_peft"]

#: Default learning rate per method: the adapter methods train few, freshly initialised or
#: small parameters and need a large step; full fine-tuning needs the usual small one.
DEFAULT_LR: dict[str, float] = {
    "ggm": 1e-3, "pc-all": 1e-3, "random": 1e-3, "top-importance": 1e-3,
    "bitfit": 1e-3, "full": 5e-5, "lora": 1e-3, "pissa": 1e-3,
}


@dataclass
class MethodOptions:
    """Knobs the builders read. The GGM ones carry :class:`GGMConfig`'s names and defaults
    and reach it through :meth:`ggm_config`; the ``lora_*`` ones are the LoRA baselines'."""

    rank: int = GGMConfig.rank
    n_important: int = GGMConfig.n_important
    n_select: int = GGMConfig.n_select
    tau: float = GGMConfig.tau
    lam: float = GGMConfig.lam
    g: float = GGMConfig.g
    omega_step: str = GGMConfig.omega_step
    groups: str = GGMConfig.groups
    regularization: float | str | None = GGMConfig.regularization
    warmup_steps: int | None = GGMConfig.warmup_steps
    scoring_steps: int | None = GGMConfig.scoring_steps
    seed: int = GGMConfig.seed
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("query", "value")

    def ggm_config(self, selection: str) -> GGMConfig:
        """The :class:`GGMConfig` of these options with node-selection policy ``selection``."""
        shared = {f.name for f in fields(GGMConfig)}
        return GGMConfig(selection=selection,
                         **{k: v for k, v in asdict(self).items() if k in shared})


@dataclass
class PreparedModel:
    """A model ready for the training loop.

    ``model(**batch)`` returns an output with ``.loss`` and ``.logits``; ``allocator`` (GGM
    family only) must be stepped after every optimiser step; ``save(directory)`` writes the
    trained adapter (or the whole model for ``full``) and returns the written paths.
    """

    method: str
    model: nn.Module
    save: Callable[[Path], list[str]]
    allocator: Any | None = None
    graphopt_model: Any | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameters right now (drops after a GGM selection)."""
        params = list(self.model.parameters())
        return (sum(p.numel() for p in params if p.requires_grad),
                sum(p.numel() for p in params))


def import_hf_peft() -> Any:
    """Hugging Face ``peft`` (not our ``graphopt.peft``), or a clear ImportError."""
    try:
        return importlib.import_module("peft")
    except ImportError as exc:
        raise ImportError("methods 'lora' and 'pissa' need Hugging Face peft: "
                          "pip install 'graphopt[baselines]' (or pip install peft)") from exc


def _import_allocator() -> Any:
    from graphopt.peft import allocation

    if hasattr(allocation, "GGMAllocator"):
        return allocation.GGMAllocator
    from graphopt.peft.callbacks import GGMAllocator  # where P1 may keep the loop helper

    return GGMAllocator


def _build_pc(selection: str) -> Callable[[nn.Module, MethodOptions, int], PreparedModel]:
    def build(model: nn.Module, opts: MethodOptions, steps_per_epoch: int) -> PreparedModel:
        from graphopt.peft.model import get_graphopt_model

        config = opts.ggm_config(selection)
        gmodel = get_graphopt_model(model, config)
        if opts.n_select > len(gmodel.nodes) and selection != "none":
            raise ValueError(f"--n-select {opts.n_select} exceeds the {len(gmodel.nodes)} "
                             f"principal-component nodes of this model")
        allocator = None
        if selection != "none":
            allocator = _import_allocator()(gmodel, config, steps_per_epoch=steps_per_epoch)

        def save(directory: Path) -> list[str]:
            gmodel.save_adapter(directory)
            return ["adapter_model.safetensors", "adapter_config.json"]

        return PreparedModel(selection if selection != "none" else "pc-all", gmodel, save,
                             allocator, gmodel,
                             {"ggm_config": config.to_dict(), "n_nodes": len(gmodel.nodes)})
    return build


def _head_names(model: nn.Module) -> list[str]:
    from graphopt.peft.model import find_head_modules

    return find_head_modules(model, None)


def _save_trainable(model: nn.Module, directory: Path, *, everything: bool = False) -> list[str]:
    """Trained tensors (or the whole state) as safetensors, written atomically."""
    from safetensors.torch import save_file

    from graphopt._atomic import atomic_path

    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
             if everything or p.requires_grad}
    name = "model.safetensors" if everything else "trainable.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file(state, str(tmp))
    return [name]


def _build_bitfit(model: nn.Module, opts: MethodOptions, steps_per_epoch: int) -> PreparedModel:
    heads = _head_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n.endswith("bias") or any(n.startswith(h + ".") for h in heads))
    return PreparedModel("bitfit", model, lambda d: _save_trainable(model, d), info={"heads": heads})


def _build_full(model: nn.Module, opts: MethodOptions, steps_per_epoch: int) -> PreparedModel:
    for p in model.parameters():
        p.requires_grad_(True)

    def save(directory: Path) -> list[str]:
        return _save_trainable(model, directory, everything=True)

    return PreparedModel("full", model, save)


def _build_lora(init: str) -> Callable[[nn.Module, MethodOptions, int], PreparedModel]:
    def build(model: nn.Module, opts: MethodOptions, steps_per_epoch: int) -> PreparedModel:
        hf_peft = import_hf_peft()
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in opts.lora_targets if t not in names]
        if missing:
            raise ValueError(f"LoRA targets {missing} match no module of this model "
                             f"(BERT-style query/value projections expected)")
        config = hf_peft.LoraConfig(
            r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=0.0,
            target_modules=list(opts.lora_targets), task_type="SEQ_CLS",
            modules_to_save=_head_names(model) or None,
            init_lora_weights="pissa" if init == "pissa" else True)
        pmodel = hf_peft.get_peft_model(model, config)

        def save(directory: Path) -> list[str]:
            # peft writes adapter_model.safetensors + adapter_config.json. For PiSSA the
            # adapter is relative to the residual base weights (see docs/finetune.md).
            pmodel.save_pretrained(str(directory))
            return sorted(p.name for p in directory.iterdir() if p.name.startswith("adapter_"))

        return PreparedModel(init, pmodel, save,
                             info={"lora_r": opts.lora_r, "lora_alpha": opts.lora_alpha,
                                   "lora_targets": list(opts.lora_targets)})
    return build


#: name -> (description, builder(model, options, steps_per_epoch) -> PreparedModel)
METHODS: dict[str, tuple[str, Callable[[nn.Module, MethodOptions, int], PreparedModel]]] = {
    "ggm": ("PC nodes, l2,g-GGM selection of n_select nodes (published schedule)", _build_pc("ggm")),
    "pc-all": ("all PC nodes trained, no selection", _build_pc("none")),
    "random": ("PC nodes, n_select chosen at random after scoring", _build_pc("random")),
    "top-importance": ("PC nodes, the n_select best-scored nodes", _build_pc("top-importance")),
    "bitfit": ("bias vectors + task head", _build_bitfit),
    "full": ("every parameter", _build_full),
    "lora": ("Hugging Face peft LoRA, r=8 on query/value", _build_lora("lora")),
    "pissa": ("Hugging Face peft PiSSA, r=8 on query/value", _build_lora("pissa")),
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def prepare_method(method: str, model: nn.Module, options: MethodOptions,
                   steps_per_epoch: int) -> PreparedModel:
    """Turn ``model`` (modified in place) into the trainable setup of ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
    return METHODS[method][1](model, options, steps_per_epoch)
