"""Running the published schedule inside a training loop.

Schedule (ALGORITHMS.md §3), counted in optimiser steps t = 1, 2, …:

    t ≤ W                 warm-up: every node trains, nothing is recorded
    W < t ≤ W + T         scoring: every node trains; after each step one sample row of X
    t = W + T             selection: X (averaged over ranks) → allocation → freeze the rest
    t > W + T             trained: only the selected nodes (and the head) train

W and T come from ``warmup_steps`` / ``scoring_steps``, else ``warmup_epochs`` ×
steps_per_epoch and ``scoring_epochs`` × steps_per_epoch (published: one epoch each).
The optimiser never needs rebuilding: frozen nodes get ``requires_grad=False`` and no
gradient, so it skips them.

* :class:`GGMAllocator` — call ``allocator.step()`` after every ``optimizer.step()`` (before
  ``zero_grad``) in a plain PyTorch loop.
* :class:`GGMAllocationCallback` — the same object driven by ``transformers.Trainer``
  (``on_optimizer_step`` runs after the step and before the gradients are cleared).
"""

from __future__ import annotations

import os
from typing import Any

from graphopt.peft.allocation import Allocation, allocate
from graphopt.peft.config import GGMConfig
from graphopt.peft.distributed import average_samples, broadcast_selection
from graphopt.peft.model import GraphoptModel
from graphopt.peft.scoring import NodeScorer

__all__ = ["GGMAllocator", "GGMAllocationCallback"]


class GGMAllocator:
    """Scores nodes, selects once, and freezes the rest, following the schedule above.

    Parameters
    ----------
    model : the GraphoptModel being trained (not the DDP wrapper around it).
    config : defaults to ``model.config``.
    steps_per_epoch : optimiser steps per epoch (needed unless both lengths are in steps).

    Attributes
    ----------
    phase : ``"warmup"`` | ``"scoring"`` | ``"trained"``.
    allocation : the :class:`Allocation` once the selection happened, else None.
    steps : optimiser steps seen so far.
    """

    def __init__(self, model: GraphoptModel, config: GGMConfig | None = None, *,
                 steps_per_epoch: int | None = None):
        if not isinstance(model, GraphoptModel):
            raise TypeError("model must be the GraphoptModel returned by get_graphopt_model "
                            f"(unwrap DDP first), got {type(model).__name__}")
        self.model = model
        self.config = config if config is not None else model.config
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool)
                                            or int(steps_per_epoch) != steps_per_epoch
                                            or steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        self.warmup_steps, self.scoring_steps = self.config.phase_lengths(steps_per_epoch)
        n = len(model.nodes)
        c = self.config
        if c.selection != "none" and c.n_select > n:
            raise ValueError(f"n_select ({c.n_select}) exceeds the number of nodes ({n})")
        if c.selection != "none" and c.n_important > n:
            raise ValueError(f"n_important ({c.n_important}) exceeds the number of nodes ({n})")
        needed = {"ggm": 2, "top-importance": 1}.get(c.selection, 0)
        if self.scoring_steps < needed:
            raise ValueError(f"selection={c.selection!r} needs at least {needed} scoring steps, "
                             f"got {self.scoring_steps}")
        self.scorer = NodeScorer(model.nodes, c.beta1, c.beta2)
        self.allocation: Allocation | None = None
        self.steps = 0
        if self.scoring_steps == 0 and self.warmup_steps == 0:
            self._select()

    @property
    def phase(self) -> str:
        if self.allocation is not None:
            return "trained"
        return "warmup" if self.steps < self.warmup_steps else "scoring"

    @property
    def selection_step(self) -> int:
        """The optimiser step after which the selection is made (W + T)."""
        return self.warmup_steps + self.scoring_steps

    def step(self) -> None:
        """Advance one optimiser step: score it if in the scoring phase; select at W + T."""
        if self.allocation is not None:
            self.steps += 1
            return
        self.steps += 1
        if self.steps > self.warmup_steps:
            self.scorer.update()
        if self.steps >= self.selection_step:
            self._select()

    def _select(self) -> None:
        samples = average_samples(self.scorer.samples())
        alloc = allocate(samples, self.model.node_names, self.config, step=self.steps)
        device = samples.device
        alloc.selected = broadcast_selection(alloc.selected, device)
        self.model.train_only_nodes(alloc.selected)
        self.allocation = alloc
        self.scorer.reset()  # the samples live on in the Allocation; free the EMA state

    def state_dict(self) -> dict[str, Any]:
        """Progress counters (the allocation itself is saved with ``Allocation.save``)."""
        return {"steps": self.steps, "warmup_steps": self.warmup_steps,
                "scoring_steps": self.scoring_steps}


try:
    from transformers import TrainerCallback as _TrainerCallback
except Exception:  # pragma: no cover - transformers absent
    _TrainerCallback = object


class GGMAllocationCallback(_TrainerCallback):
    """``transformers.Trainer`` callback running :class:`GGMAllocator`.

    Use ``Trainer(model=gm, ..., callbacks=[GGMAllocationCallback(gm)])`` with
    ``TrainingArguments(remove_unused_columns=False, label_names=["labels"])``. steps per
    epoch come from ``steps_per_epoch`` or from the train dataloader and gradient
    accumulation. If ``save_dir`` is given (or defaults to ``<output_dir>/allocation``)
    the allocation is saved there when training ends. Under DDP pass
    ``ddp_find_unused_parameters=True``.
    """

    def __init__(self, model: GraphoptModel, config: GGMConfig | None = None, *,
                 steps_per_epoch: int | None = None, save_dir: str | os.PathLike[str] | None = None):
        if _TrainerCallback is object:  # pragma: no cover
            raise ImportError("GGMAllocationCallback needs transformers installed")
        self.model = model
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.save_dir = save_dir
        self.allocator: GGMAllocator | None = None

    @property
    def allocation(self) -> Allocation | None:
        return None if self.allocator is None else self.allocator.allocation

    def on_train_begin(self, args, state, control, **kwargs):
        spe = self.steps_per_epoch
        if spe is None:
            loader = kwargs.get("train_dataloader")
            if loader is not None and hasattr(loader, "__len__"):
                spe = max(len(loader) // max(args.gradient_accumulation_steps, 1), 1)
            elif state.max_steps and args.num_train_epochs:
                spe = max(int(state.max_steps // max(args.num_train_epochs, 1)), 1)
        self.allocator = GGMAllocator(self.model, self.config, steps_per_epoch=spe)
        return control

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.allocator.step()
        return control

    def on_train_end(self, args, state, control, **kwargs):
        alloc = self.allocation
        if alloc is not None and state.is_world_process_zero:
            target = self.save_dir if self.save_dir is not None else os.path.join(
                args.output_dir, "allocation")
            alloc.save(target)
        return control

