"""The training-hook seam: one protocol for everything that acts during training.

A feature that must act while a model trains (the GGM allocator, spectral coordination, a
user's own) is a :class:`TrainingHook`. It plugs into four named moments of every optimiser
step, and every loop — the plain loop of :func:`graphopt.peft.train.train_model`, a user's
own loop, ``transformers.Trainer`` (and so accelerate) — calls the same moments::

    loss = task_loss + Σ_h h.loss_term(model)        extra loss terms (autograd)
    loss.backward()
    h.before_optimizer_step(model)                   gradients final, not yet applied
    optimizer.step()
    h.after_optimizer_step(model)                    parameters updated, gradients still there
    optimizer.zero_grad()
    ...
    h.on_train_end()                                 once, after the last step

``state_dict()`` / ``load_state_dict()`` make a checkpoint the union of the hooks' states.
``step_info()`` reports what the loop should record for the step (e.g. the allocator's
phase). A hook overrides only the moments it needs; the others do nothing.

Three ways to drive hooks:

- :func:`attach_to_optimizer` registers the two step moments as ``torch.optim`` step pre-
  and post-hooks (``Optimizer.register_step_pre_hook`` / ``register_step_post_hook``), so a
  plain loop only adds :func:`extra_loss` to its loss.
- :class:`HookRunner` calls the moments explicitly and times each hook (the CLI loop).
- :class:`GraphoptCallback` runs them inside ``transformers.Trainer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ._lazy import lazy_attributes

__all__ = ["TrainingHook", "HookRunner", "attach_to_optimizer", "extra_loss",
           "GraphoptCallback"]


class TrainingHook:
    """Base class (and protocol) of everything that acts during training.

    Subclasses override any of the moments below; the defaults do nothing. ``name`` labels
    the hook in timings and checkpoints and must be unique within one run.
    """

    name: str = "hook"

    def on_train_begin(self, steps_per_epoch: int | None) -> None:
        """Called once before the first step, with the loop's optimiser steps per epoch."""

    def loss_term(self, model: nn.Module) -> torch.Tensor | None:
        """An extra term to add to the training loss (with autograd), or None."""
        return None

    def before_optimizer_step(self, model: nn.Module) -> None:
        """After ``backward()`` (under DDP: after the all-reduce), before ``optimizer.step()``."""

    def after_optimizer_step(self, model: nn.Module) -> None:
        """After ``optimizer.step()``, before the gradients are cleared."""

    def step_info(self) -> dict[str, Any]:
        """What the loop should record for the current step (e.g. ``{"phase": "scoring"}``)."""
        return {}

    def on_train_end(self) -> None:
        """Called once after the last step."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this hook mid-run."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _check_hooks(hooks: Iterable[TrainingHook]) -> list[TrainingHook]:
    hooks = list(hooks)
    for h in hooks:
        if not isinstance(h, TrainingHook):
            raise TypeError(f"hooks must be TrainingHook instances, got {type(h).__name__}")
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ValueError(f"hook names must be unique, got {names}")
    return hooks


def extra_loss(hooks: Sequence[TrainingHook], model: nn.Module) -> torch.Tensor | None:
    """Σ_h h.loss_term(model) over the hooks that return a term; None if none does."""
    total = None
    for h in hooks:
        term = h.loss_term(model)
        if term is not None:
            total = term if total is None else total + term
    return total


class HookRunner:
    """Calls the hooks' moments in order and records the seconds each hook spent per step.

    ``sync`` (called before and after each timed hook) makes GPU time count where it is
    spent; pass a no-op on CPU. ``seconds[name]`` holds one entry per optimiser step.
    """

    def __init__(self, hooks: Iterable[TrainingHook], model: nn.Module,
                 sync: Callable[[], None] = lambda: None) -> None:
        self.hooks = _check_hooks(hooks)
        self.model = model
        self.sync = sync
        self.seconds: dict[str, list[float]] = {h.name: [] for h in self.hooks}
        self._pending: dict[str, float] = {}

    def _timed(self, hook: TrainingHook, call: Callable[[], Any]) -> Any:
        self.sync()
        t0 = time.perf_counter()
        out = call()
        self.sync()
        self._pending[hook.name] = self._pending.get(hook.name, 0.0) + time.perf_counter() - t0
        return out

    def on_train_begin(self, steps_per_epoch: int | None) -> None:
        for h in self.hooks:
            h.on_train_begin(steps_per_epoch)

    def loss_term(self) -> torch.Tensor | None:
        total = None
        for h in self.hooks:
            term = self._timed(h, lambda h=h: h.loss_term(self.model))
            if term is not None:
                total = term if total is None else total + term
        return total

    def before_optimizer_step(self) -> None:
        for h in self.hooks:
            self._timed(h, lambda h=h: h.before_optimizer_step(self.model))

    def after_optimizer_step(self) -> None:
        for h in self.hooks:
            self._timed(h, lambda h=h: h.after_optimizer_step(self.model))

    def end_step(self) -> None:
        """Close the step's timing records."""
        for h in self.hooks:
            self.seconds[h.name].append(self._pending.pop(h.name, 0.0))

    def on_train_end(self) -> None:
        for h in self.hooks:
            h.on_train_end()

    def step_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for h in self.hooks:
            info.update(h.step_info())
        return info

    def state_dict(self) -> dict[str, Any]:
        return {h.name: h.state_dict() for h in self.hooks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.seconds) - set(state))
        if missing:
            raise ValueError(f"the saved state has no entry for the hooks {missing}")
        for h in self.hooks:
            h.load_state_dict(state[h.name])


def attach_to_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module,
                        hooks: Iterable[TrainingHook]) -> list[Any]:
    """Run the hooks' step moments as ``optimizer``'s step pre- and post-hooks.

    Returns the removable handles. The loss term stays the loop's job (:func:`extra_loss`)
    because the optimiser never sees the loss.
    """
    hooks = _check_hooks(hooks)

    def before(*_: Any) -> None:
        for h in hooks:
            h.before_optimizer_step(model)

    def after(*_: Any) -> None:
        for h in hooks:
            h.after_optimizer_step(model)

    return [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]


def _make_callback_class() -> type:
    from transformers import TrainerCallback

    class GraphoptCallback(TrainerCallback):
        """Runs :class:`TrainingHook` s inside ``transformers.Trainer`` (and so accelerate).

        ``Trainer(model=gm, ..., callbacks=[GraphoptCallback([GGMAllocator(gm), ...], gm)])``.
        The loss terms are added to the model's training-mode output loss by a forward hook
        on ``model`` (so the Trainer scales them with the task loss, per micro-batch);
        ``before_optimizer_step`` runs in ``on_pre_optimizer_step`` (after the Trainer's
        gradient clipping) and ``after_optimizer_step`` in ``on_optimizer_step``. Steps per
        epoch come from the train dataloader and gradient accumulation. Each hook's
        ``step_info`` numbers are added to the training logs. Under DDP pass
        ``ddp_find_unused_parameters=True`` when a hook freezes parameters.
        """

        def __init__(self, hooks: Iterable[TrainingHook], model: nn.Module) -> None:
            self.hooks = _check_hooks(hooks)
            self.model = model
            self._handle: Any = None

        def _add_loss_terms(self, module: nn.Module, args: Any, output: Any) -> Any:
            if not module.training:
                return output
            term = extra_loss(self.hooks, self.model)
            loss = output.get("loss") if hasattr(output, "get") else None
            if term is None or loss is None:
                return output
            output["loss"] = loss + term
            return output

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            spe = None
            loader = kwargs.get("train_dataloader")
            if loader is not None and hasattr(loader, "__len__"):
                spe = max(len(loader) // max(args.gradient_accumulation_steps, 1), 1)
            elif state.max_steps and args.num_train_epochs:
                spe = max(int(state.max_steps // max(args.num_train_epochs, 1)), 1)
            for h in self.hooks:
                h.on_train_begin(spe)
            self._handle = self.model.register_forward_hook(self._add_loss_terms)
            return control

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            for h in self.hooks:
                h.before_optimizer_step(self.model)
            return control

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            for h in self.hooks:
                h.after_optimizer_step(self.model)
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
                   **kwargs: Any) -> Any:
            # Trainer.log appends its record to log_history before calling on_log, so the
            # numbers go into that record too (training records only: they carry "loss").
            if logs is None or "loss" not in logs:
                return control
            for h in self.hooks:
                for key, value in h.step_info().items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        logs[key] = value
                        if state.log_history and "loss" in state.log_history[-1]:
                            state.log_history[-1][key] = value
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            for h in self.hooks:
                h.on_train_end()
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
            return control

    return GraphoptCallback


# transformers is optional and slow to import: the callback class is made on first use.
__getattr__ = lazy_attributes(__name__, {"GraphoptCallback": _make_callback_class})
