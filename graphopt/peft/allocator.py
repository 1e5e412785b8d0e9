"""The published allocation schedule as a training hook (docs/algorithms.md §3).

Counted in optimiser steps t = 1, 2, …:

    t ≤ W                 warm-up: every node trains, nothing is recorded
    W < t ≤ W + T         scoring: every node trains; after each step one sample row of X
    t = W + T             selection: X (averaged over ranks) → allocation → freeze the rest
    t > W + T             trained: only the selected nodes (and the head) train

W and T come from ``warmup_steps`` / ``scoring_steps``, else ``warmup_epochs`` ×
steps_per_epoch and ``scoring_epochs`` × steps_per_epoch (published: one epoch each).
The optimiser never needs rebuilding: frozen nodes get ``requires_grad=False`` and no
gradient, so it skips them.

:class:`GGMAllocator` is a :class:`~graphopt.peft.hooks.TrainingHook`: it acts after every
optimiser step (before the gradients are cleared, since the scores read ``p.grad``), in any
loop that drives hooks — :func:`~graphopt.peft.train.train_model`,
:func:`~graphopt.peft.hooks.attach_to_optimizer` in a plain loop, or
:class:`~graphopt.peft.hooks.GraphoptCallback` in ``transformers.Trainer``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from torch import nn

from graphopt.peft.allocation import Allocation, allocate
from graphopt.peft.config import GGMConfig
from graphopt.peft.distributed import average_samples, broadcast_selection
from graphopt.peft.hooks import TrainingHook
from graphopt.peft.model import GraphoptModel
from graphopt.peft.scoring import NodeScorer

__all__ = ["GGMAllocator"]

#: Scoring steps each selection policy needs: the GGM a covariance (T ≥ 2), top-importance
#: one row of scores, the others none.
_MIN_SCORING_STEPS = {"ggm": 2, "top-importance": 1}


class GGMAllocator(TrainingHook):
    """Scores nodes, selects once, and freezes the rest, following the schedule above.

    Parameters
    ----------
    model : the GraphoptModel being trained (not the DDP wrapper around it).
    config : defaults to ``model.config``.
    steps_per_epoch : optimiser steps per epoch; needed unless both phase lengths are in
        steps. ``"from_loop"`` takes it from the loop's ``on_train_begin`` (the Trainer
        callback reads it off the train dataloader).
    save_dir : if given, the allocation is saved there when training ends (by rank 0 only
        under torch.distributed).

    Attributes
    ----------
    phase : ``"warmup"`` | ``"scoring"`` | ``"trained"``.
    allocation : the :class:`Allocation` once the selection happened, else None.
    steps : optimiser steps seen so far.
    """

    name = "ggm_allocator"

    def __init__(self, model: GraphoptModel, config: GGMConfig | None = None, *,
                 steps_per_epoch: int | Literal["from_loop"] | None = None,
                 save_dir: str | os.PathLike[str] | None = None):
        if not isinstance(model, GraphoptModel):
            raise TypeError("model must be the GraphoptModel returned by get_graphopt_model "
                            f"(unwrap DDP first), got {type(model).__name__}")
        self.model = model
        self.save_dir = save_dir
        self.config = config if config is not None else model.config
        self.config.check_node_budget(len(model.nodes))
        self.scorer = NodeScorer(model.nodes, self.config.beta1, self.config.beta2)
        self.allocation: Allocation | None = None
        self.steps = 0
        self.warmup_steps: int | None = None
        self.scoring_steps: int | None = None
        if steps_per_epoch != "from_loop":
            self._set_schedule(steps_per_epoch)

    def _set_schedule(self, steps_per_epoch: int | None) -> None:
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool)
                                            or int(steps_per_epoch) != steps_per_epoch
                                            or steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        self.warmup_steps, self.scoring_steps = self.config.phase_lengths(steps_per_epoch)
        needed = _MIN_SCORING_STEPS.get(self.config.selection, 0)
        if self.scoring_steps < needed:
            raise ValueError(f"selection={self.config.selection!r} needs at least {needed} "
                             f"scoring steps, got {self.scoring_steps}")
        if self.scoring_steps == 0 and self.warmup_steps == 0 and self.allocation is None:
            self._select()

    def _require_schedule(self) -> None:
        if self.warmup_steps is None:
            raise RuntimeError("steps_per_epoch='from_loop': the schedule is set when the "
                               "training loop calls on_train_begin, which it has not yet")

    @property
    def phase(self) -> str:
        if self.allocation is not None:
            return "trained"
        self._require_schedule()
        return "warmup" if self.steps < self.warmup_steps else "scoring"

    @property
    def selection_step(self) -> int:
        """The optimiser step after which the selection is made (W + T)."""
        self._require_schedule()
        return self.warmup_steps + self.scoring_steps

    def step(self) -> None:
        """Advance one optimiser step: score it if in the scoring phase; select at W + T."""
        self._require_schedule()
        self.steps += 1
        if self.allocation is not None:
            return
        if self.steps > self.warmup_steps:
            self.scorer.update()
        if self.steps >= self.selection_step:
            self._select()

    def _select(self) -> None:
        samples = average_samples(self.scorer.samples())
        alloc = allocate(samples, self.model.node_names, self.config, step=self.steps)
        alloc.selected = broadcast_selection(alloc.selected, samples.device)
        self.model.train_only_nodes(alloc.selected)
        self.allocation = alloc
        self.scorer.reset()  # the samples live on in the Allocation; free the EMA state

    # -- the TrainingHook moments ----------------------------------------------------------
    def on_train_begin(self, steps_per_epoch: int | None) -> None:
        if self.warmup_steps is None:
            self._set_schedule(steps_per_epoch)

    def after_optimizer_step(self, model: nn.Module) -> None:
        self.step()

    def step_info(self) -> dict[str, Any]:
        return {"phase": self.phase}

    def on_train_end(self) -> None:
        if self.save_dir is None or self.allocation is None:
            return
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            self.allocation.save(self.save_dir)

    def state_dict(self) -> dict[str, Any]:
        """Counters, the scorer's EMAs and samples, and the selection once made."""
        alloc = self.allocation
        return {"steps": self.steps, "warmup_steps": self.warmup_steps,
                "scoring_steps": self.scoring_steps, "scorer": self.scorer.state_dict(),
                "allocation": None if alloc is None else alloc.to_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a resumed run): re-freezes the selection if made."""
        if (state["warmup_steps"], state["scoring_steps"]) != (self.warmup_steps,
                                                               self.scoring_steps) \
                and self.warmup_steps is not None:
            raise ValueError(f"the saved allocator ran the schedule warm-up/scoring = "
                             f"{state['warmup_steps']}/{state['scoring_steps']} steps, this "
                             f"one {self.warmup_steps}/{self.scoring_steps}")
        alloc = None
        if state["allocation"] is not None:
            alloc = Allocation.from_state(state["allocation"])
            if alloc.node_names != self.model.node_names:
                raise ValueError("the saved allocation names other nodes than this model's")
        self.scorer.load_state_dict(state["scorer"])
        self.warmup_steps, self.scoring_steps = state["warmup_steps"], state["scoring_steps"]
        self.steps = int(state["steps"])
        if alloc is not None:
            self.model.train_only_nodes(alloc.selected)
            self.scorer.reset()
        self.allocation = alloc
