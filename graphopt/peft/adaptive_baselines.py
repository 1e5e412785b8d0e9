"""AdaLoRA and AdaMSS (Hugging Face peft) on the GGM budget: the ``adalora`` / ``adamss`` methods.

Both are the nearest published relatives of the GGM allocation: they score adapter units
with the same sensitivity × uncertainty EMAs (docs/algorithms.md §3) and keep a budget of
them. To compare allocations, not settings, both are built from the :class:`GGMConfig` of
the run, on the same matrices (``target_modules``) and with the same budget and schedule:

- **AdaLoRA** (``peft.tuners.adalora``): W + B diag(E) A with ``init_r = rank`` triplets per
  matrix (r = 10 on the 18 query/key/value matrices: 180 triplets, as many as the 180 GGM
  nodes). Its budget of kept triplets is K = ``n_select``; no masking during the
  ``warmup`` steps, a cubic decrease of the budget over the ``scoring`` steps, the rank
  pattern fixed from then on (peft's ``tinit`` = warm-up steps, ``total_step − tfinal`` =
  warm-up + scoring steps). One triplet trains d_in + d_out + 1 parameters, one GGM node
  d_in + d_out, so the counts match to 0.1 %.
- **AdaMSS** (``peft.tuners.adamss``) with adaptive subspace allocation (ASA): each matrix'
  SVD column space is clustered into ``rank`` subspaces (180 in all), each trained at rank
  ``AdamssBaselineConfig.subspace_rank``; importance accumulates over the scoring steps
  and one mask at their end keeps K = ``n_select`` subspaces (the others freeze).

Each method's budget step must run after every optimiser step (peft's
``update_and_allocate(global_step)``): :class:`PeftBudgetHook` does that as a
:class:`~graphopt.peft.hooks.TrainingHook`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from graphopt.peft.config import GGMConfig
from graphopt.peft.hooks import TrainingHook

__all__ = ["AdamssBaselineConfig", "PeftBudgetHook", "build_adalora", "build_adamss",
           "adalora_effective_trainable"]


@dataclass(frozen=True)
class AdamssBaselineConfig:
    """AdaMSS knobs that the GGM config has no counterpart for.

    ``svd_rank`` R and ``subspace_rank`` r_i make one subspace about one GGM node of a
    384-wide model: a subspace of a d_out × d_in matrix split into S subspaces trains
    r_i·(R + d_out/S) parameters, 4·(154 + 384/10) ≈ 770 against d_in + d_out = 768.
    """

    svd_rank: int = 154
    subspace_rank: int = 4


class PeftBudgetHook(TrainingHook):
    """Calls ``peft_model.base_model.update_and_allocate(step)`` after every optimiser step
    (step counted from 0, as peft's examples do), while the gradients are still there."""

    def __init__(self, peft_model: nn.Module, name: str) -> None:
        self.peft_model = peft_model
        self.name = name
        self.step = 0

    def after_optimizer_step(self, model: nn.Module) -> None:
        self.peft_model.base_model.update_and_allocate(self.step)
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def _targets(model: nn.Module, ggm: GGMConfig, heads: list[str]) -> list[str]:
    from graphopt.peft.model import find_target_modules

    return find_target_modules(model, ggm.target_modules, heads)


def _schedule(ggm: GGMConfig, steps_per_epoch: int | None) -> tuple[int, int]:
    warmup, scoring = ggm.phase_lengths(steps_per_epoch)
    if scoring < 1:
        raise ValueError("adalora/adamss need at least 1 scoring step (--scoring-steps) to "
                         "allocate their budget")
    return warmup, scoring


def adalora_effective_trainable(peft_model: nn.Module) -> int:
    """Parameters that still train: every trainable tensor outside the adapters, plus
    d_in + d_out + 1 per triplet that the rank pattern keeps (all of them before the first
    mask). Masked triplets keep ``requires_grad`` in peft but their E entry is held at 0,
    so A and B get no gradient from the loss."""
    config = peft_model.peft_config["default"]
    # peft keys the rank pattern by the inner model's parameter names, with or without the
    # adapter name; match them by suffix, adapter name removed.
    pattern = {k.replace(".default", ""): v for k, v in (config.rank_pattern or {}).items()}
    count = 0
    for name, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        if ".lora_E." in name:
            short = name.replace(".default", "")
            keys = [k for k in pattern if short.endswith(k)]
            kept = sum(bool(x) for x in pattern[keys[0]]) if keys else p.shape[0]
            a = peft_model.get_parameter(name.replace(".lora_E.", ".lora_A."))
            b = peft_model.get_parameter(name.replace(".lora_E.", ".lora_B."))
            count += kept * (a.shape[1] + b.shape[0] + 1)
        elif ".lora_A." not in name and ".lora_B." not in name:
            count += p.numel()
    return count


def build_adalora(model: nn.Module, ggm: GGMConfig, steps_per_epoch: int | None,
                  heads: list[str], hf_peft: Any
                  ) -> tuple[nn.Module, PeftBudgetHook, dict[str, Any], Callable[[], int]]:
    """AdaLoRA on ``ggm``'s targets, budget and schedule (module docstring); returns the peft
    model, its budget hook, the facts to record and the effective trainable-parameter count."""
    heads = list(dict.fromkeys(heads))
    targets = _targets(model, ggm, heads)
    warmup, scoring = _schedule(ggm, steps_per_epoch)
    units = ggm.rank * len(targets)
    if ggm.n_select > units:
        raise ValueError(f"n_select ({ggm.n_select}) exceeds the {units} AdaLoRA triplets "
                         f"(rank {ggm.rank} x {len(targets)} matrices)")
    # peft fixes the rank pattern at step total_step - tfinal and holds it afterwards, so
    # tfinal only has to keep that step at warm-up + scoring; the run may be any length.
    tfinal = max(steps_per_epoch or 1, 1)
    config = hf_peft.AdaLoraConfig(
        init_r=ggm.rank, target_r=max(1, round(ggm.n_select / len(targets))),
        tinit=warmup, tfinal=tfinal, total_step=warmup + scoring + tfinal, deltaT=1,
        beta1=ggm.beta1, beta2=ggm.beta2, lora_dropout=0.0,
        target_modules=targets, task_type="SEQ_CLS", modules_to_save=heads or None)
    pmodel = hf_peft.get_peft_model(model, config)
    # target_r is a mean rank per matrix (an integer); the GGM budget K need not be a
    # multiple of the matrix count, so the allocator's total budget is set to K itself.
    pmodel.base_model.rankallocator.target_bgt = ggm.n_select
    info = {"adalora_init_r": ggm.rank, "adalora_budget": ggm.n_select,
            "adalora_tinit": warmup, "adalora_budget_final_step": warmup + scoring,
            "targets": targets, "heads": heads}
    return (pmodel, PeftBudgetHook(pmodel, "adalora_budget"), info,
            lambda: adalora_effective_trainable(pmodel))


def build_adamss(model: nn.Module, ggm: GGMConfig, steps_per_epoch: int | None,
                 heads: list[str], hf_peft: Any, adamss: AdamssBaselineConfig | None = None
                 ) -> tuple[nn.Module, PeftBudgetHook, dict[str, Any]]:
    """AdaMSS + ASA on ``ggm``'s targets, budget and schedule (module docstring); returns the
    peft model, its budget hook and the facts to record (ASA freezes pruned subspaces, so
    ``requires_grad`` counts the trainable parameters)."""
    adamss = adamss if adamss is not None else AdamssBaselineConfig()
    heads = list(dict.fromkeys(heads))
    targets = _targets(model, ggm, heads)
    warmup, scoring = _schedule(ggm, steps_per_epoch)
    # Importance accumulates from step `warmup` to `warmup + scoring`; with the mask
    # interval equal to that end step the only mask is the one at the end (a mask at an
    # earlier multiple would prune before the scores are in).
    config = hf_peft.AdamssConfig(
        r=adamss.svd_rank, num_subspaces=ggm.rank, subspace_rank=adamss.subspace_rank,
        target_modules=targets, modules_to_save=heads or None, use_asa=True,
        asa_target_subspaces=ggm.n_select, init_warmup=warmup, final_warmup=warmup + scoring,
        mask_interval=warmup + scoring, asa_importance_beta=ggm.beta1,
        asa_uncertainty_beta=ggm.beta2, random_seed=ggm.seed, task_type="SEQ_CLS")
    pmodel = hf_peft.get_peft_model(model, config)
    total = sum(len(m.adamss_A["default"]) for m in pmodel.modules()
                if hasattr(m, "adamss_A") and "default" in m.adamss_A)
    if ggm.n_select > total:
        raise ValueError(f"n_select ({ggm.n_select}) exceeds the {total} AdaMSS subspaces")
    info = {"adamss_svd_rank": adamss.svd_rank, "adamss_subspaces_per_matrix": ggm.rank,
            "adamss_subspace_rank": adamss.subspace_rank, "adamss_total_subspaces": total,
            "adamss_budget": ggm.n_select, "adamss_mask_step": warmup + scoring,
            "targets": targets, "heads": heads}
    return pmodel, PeftBudgetHook(pmodel, "adamss_asa"), info
