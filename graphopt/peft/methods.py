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
                     :class:`LoraBaselineConfig`: r = 8 on the attention query and value projections
- ``adalora``/``adamss`` Hugging Face ``peft`` AdaLoRA / AdaMSS with adaptive allocation, on the
                     GGM config's matrices, budget K = ``n_select`` and schedule
                     (:mod:`graphopt.peft.adaptive_baselines`)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from graphopt.peft.allocator import GGMAllocator
from graphopt.peft.config import GGMConfig
from graphopt.peft.hooks import TrainingHook
from graphopt.peft.model import GraphoptModel

__all__ = ["LoraBaselineConfig", "PreparedModel", "FINETUNE_METHODS", "METHOD_NAMES",
           "DEFAULT_LR", "prepare_method", "import_hf_peft"]

#: Default learning rate per method: the adapter methods train few, freshly initialised or
#: small parameters and need a large step; full fine-tuning needs the usual small one.
DEFAULT_LR: dict[str, float] = {
    "ggm": 1e-3, "pc-all": 1e-3, "random": 1e-3, "top-importance": 1e-3,
    "bitfit": 1e-3, "full": 5e-5, "lora": 1e-3, "pissa": 1e-3, "adalora": 1e-3, "adamss": 1e-3,
}


@dataclass(frozen=True)
class LoraBaselineConfig:
    """The Hugging Face peft baselines ``lora`` / ``pissa``: rank r and α on the attention
    query and value projections (scaling α / r = 2)."""

    r: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("query", "value")


@dataclass
class PreparedModel:
    """A model ready for the training loop.

    ``model(**batch)`` returns an output with ``.loss`` and ``.logits``; ``hooks`` (the
    method's own training hooks: the GGM family's allocator, AdaLoRA's budget step) go into
    the training loop; ``save(directory)`` writes the trained adapter (or the whole model for
    ``full``) and returns the written paths. ``count_trainable``, when set, counts the
    parameters that still train where ``requires_grad`` cannot tell (AdaLoRA masks triplets
    by zeroing them).
    """

    method: str
    model: nn.Module
    save: Callable[[Path], list[str]]
    allocator: GGMAllocator | None = None
    graphopt_model: GraphoptModel | None = None
    info: dict[str, Any] = field(default_factory=dict)
    hooks: list[TrainingHook] = field(default_factory=list)
    count_trainable: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        # The allocator is the GGM family's hook: it runs first, as it always has.
        if self.allocator is not None and not any(h is self.allocator for h in self.hooks):
            self.hooks = [self.allocator, *self.hooks]

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameters right now (drops after a GGM selection)."""
        params = list(self.model.parameters())
        trainable = (self.count_trainable() if self.count_trainable is not None
                     else sum(p.numel() for p in params if p.requires_grad))
        return trainable, sum(p.numel() for p in params)


def import_hf_peft() -> Any:
    """Hugging Face ``peft`` (not our ``graphopt.peft``), or a clear ImportError."""
    try:
        return importlib.import_module("peft")
    except ImportError as exc:
        raise ImportError("methods 'lora', 'pissa', 'adalora' and 'adamss' need Hugging Face peft: "
                          "pip install 'graphopt[baselines]' (or pip install peft)") from exc


Builder = Callable[[nn.Module, GGMConfig, LoraBaselineConfig, int], PreparedModel]


def _build_pc(selection: str) -> Builder:
    def build(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
              steps_per_epoch: int) -> PreparedModel:
        from graphopt.peft.model import get_graphopt_model

        config = dataclasses.replace(ggm, selection=selection)
        gmodel = get_graphopt_model(model, config)
        allocator = None
        if selection != "none":
            allocator = GGMAllocator(gmodel, config, steps_per_epoch=steps_per_epoch)

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


def _build_bitfit(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
                  steps_per_epoch: int) -> PreparedModel:
    heads = _head_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n.endswith("bias") or any(n.startswith(h + ".") for h in heads))
    return PreparedModel("bitfit", model, lambda d: _save_trainable(model, d), info={"heads": heads})


def _build_full(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
                steps_per_epoch: int) -> PreparedModel:
    for p in model.parameters():
        p.requires_grad_(True)

    def save(directory: Path) -> list[str]:
        return _save_trainable(model, directory, everything=True)

    return PreparedModel("full", model, save)


def _build_lora(init: str) -> Builder:
    def build(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
              steps_per_epoch: int) -> PreparedModel:
        hf_peft = import_hf_peft()
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in lora.targets if t not in names]
        if missing:
            raise ValueError(f"LoRA targets {missing} match no module of this model "
                             f"(BERT-style query/value projections expected)")
        config = hf_peft.LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
            target_modules=list(lora.targets), task_type="SEQ_CLS",
            modules_to_save=_head_names(model) or None,
            init_lora_weights="pissa" if init == "pissa" else True)
        pmodel = hf_peft.get_peft_model(model, config)

        def save(directory: Path) -> list[str]:
            # peft writes adapter_model.safetensors + adapter_config.json. For PiSSA the
            # adapter is relative to the residual base weights (see docs/finetune.md).
            pmodel.save_pretrained(str(directory))
            return sorted(p.name for p in directory.iterdir() if p.name.startswith("adapter_"))

        return PreparedModel(init, pmodel, save,
                             info={"lora_r": lora.r, "lora_alpha": lora.alpha,
                                   "lora_targets": list(lora.targets)})
    return build


def _save_peft(pmodel: nn.Module, directory: Path) -> list[str]:
    pmodel.save_pretrained(str(directory))
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("adapter_"))


def _build_adalora(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
                   steps_per_epoch: int) -> PreparedModel:
    from graphopt.peft.adaptive_baselines import build_adalora

    pmodel, hook, info, count = build_adalora(model, ggm, steps_per_epoch, _head_names(model),
                                              import_hf_peft())
    return PreparedModel("adalora", pmodel, lambda d: _save_peft(pmodel, d), info=info,
                         hooks=[hook], count_trainable=count)


def _build_adamss(model: nn.Module, ggm: GGMConfig, lora: LoraBaselineConfig,
                  steps_per_epoch: int) -> PreparedModel:
    from graphopt.peft.adaptive_baselines import build_adamss

    pmodel, hook, info = build_adamss(model, ggm, steps_per_epoch, _head_names(model),
                                      import_hf_peft())
    return PreparedModel("adamss", pmodel, lambda d: _save_peft(pmodel, d), info=info,
                         hooks=[hook])


#: name -> (description, builder(model, ggm, lora, steps_per_epoch) -> PreparedModel)
FINETUNE_METHODS: dict[str, tuple[str, Builder]] = {
    "ggm": ("PC nodes, l2,g-GGM selection of n_select nodes (published schedule)", _build_pc("ggm")),
    "pc-all": ("all PC nodes trained, no selection", _build_pc("none")),
    "random": ("PC nodes, n_select chosen at random after scoring", _build_pc("random")),
    "top-importance": ("PC nodes, the n_select best-scored nodes", _build_pc("top-importance")),
    "bitfit": ("bias vectors + task head", _build_bitfit),
    "full": ("every parameter", _build_full),
    "lora": ("Hugging Face peft LoRA, r=8 on query/value", _build_lora("lora")),
    "pissa": ("Hugging Face peft PiSSA, r=8 on query/value", _build_lora("pissa")),
    "adalora": ("Hugging Face peft AdaLoRA, rank-r triplets on the PC targets, n_select kept "
                "(same warm-up/scoring schedule)", _build_adalora),
    "adamss": ("Hugging Face peft AdaMSS + ASA, r subspaces per PC target, n_select kept",
               _build_adamss),
}
METHOD_NAMES: tuple[str, ...] = tuple(FINETUNE_METHODS)


def prepare_method(method: str, model: nn.Module, ggm: GGMConfig | None = None,
                   steps_per_epoch: int | None = None,
                   lora: LoraBaselineConfig | None = None) -> PreparedModel:
    """Turn ``model`` (modified in place) into the trainable setup of ``method``.

    ``ggm`` configures the PC family (its ``selection`` is set by the method), ``lora`` the
    peft baselines; both default to their configs' defaults.
    """
    if method not in FINETUNE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
    return FINETUNE_METHODS[method][1](model, ggm if ggm is not None else GGMConfig(),
                                       lora if lora is not None else LoraBaselineConfig(),
                                       steps_per_epoch)
