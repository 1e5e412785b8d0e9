"""The training / evaluation loop of ``graphopt finetune``: tokenise, batch, train, evaluate.

A plain PyTorch loop (AdamW, constant learning rate) so that every method runs through the
same code: the optimiser is built once over every parameter that trains at the start, and
every feature that acts during training is a :class:`~graphopt.peft.hooks.TrainingHook`
(the GGM allocator freezes nodes itself after its selection step; spectral coordination
adds a loss term and filters gradients). Every step is timed, and the time spent inside each
hook (for the allocator: scoring, covariance, GGM solve, selection) is recorded separately so
its share of the fine-tune can be reported.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel and
each process trains on its slice of every global batch; evaluation runs on every process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from graphopt.peft.data import TextDataset
from graphopt.peft.hooks import HookRunner, TrainingHook

__all__ = ["EncodedDataset", "encode", "batches", "collate", "evaluate", "classification_metrics",
           "peak_memory", "TrainResult", "train_model"]


@dataclass
class EncodedDataset:
    """Tokenised examples (unpadded id lists) and their labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, data: TextDataset, max_length: int) -> EncodedDataset:
    """Tokenise once, truncated to ``max_length`` tokens, without padding (batches pad)."""
    enc = tokenizer(data.texts, data.text_pairs, truncation=True, max_length=max_length,
                    padding=False)
    tti = enc.get("token_type_ids")
    return EncodedDataset(list(enc["input_ids"]), None if tti is None else list(tti),
                          data.labels.copy())


def collate(data: EncodedDataset, idx: Sequence[int], pad_id: int,
             device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of examples ``idx``: right-padded to the batch's longest sequence."""
    length = max(len(data.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), length), dtype=torch.long)
    tti = torch.zeros((len(idx), length), dtype=torch.long) if data.token_type_ids else None
    for row, i in enumerate(idx):
        seq = data.input_ids[i]
        ids[row, :len(seq)] = torch.as_tensor(seq)
        mask[row, :len(seq)] = 1
        if tti is not None:
            tti[row, :len(seq)] = torch.as_tensor(data.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": torch.as_tensor(data.labels[list(idx)], dtype=torch.long)}
    if tti is not None:
        batch["token_type_ids"] = tti
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches over ``n`` examples: shuffled by ``rng``, or in order when it is None."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the unweighted mean over classes of 2PR/(P+R); 0 for a class
    never predicted nor present)."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    f1s = []
    for c in range(num_labels):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


@torch.inference_mode()
def evaluate(model: nn.Module, data: EncodedDataset, *, batch_size: int, pad_id: int,
             device: torch.device, num_labels: int, desc: str = "eval",
             progress: bool = True) -> dict[str, float]:
    """Mean loss, accuracy and macro-F1 of ``model`` on ``data``."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    preds, total_loss = [], torch.zeros((), device=device)
    for idx in tqdm(batches(len(data), batch_size, None), desc=desc, leave=False,
                    disable=not progress, file=sys.stderr):
        out = model(**collate(data, idx, pad_id, device))
        total_loss += out.loss.detach().float() * len(idx)
        preds.append(out.logits.argmax(-1))
    model.train(was_training)
    pred = torch.cat(preds).cpu().numpy()
    result = classification_metrics(data.labels, pred, num_labels)
    result["loss"] = float(total_loss) / max(len(data), 1)
    return result


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Process peak resident set size (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    cuda = None
    if device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return {"peak_rss_mib": rss_mib, "cuda_max_allocated_mib": cuda}


@dataclass
class TrainResult:
    """What ``train_model`` measured."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)      # seconds per optimiser step
    step_cpu_times: list[float] = field(default_factory=list)  # process CPU seconds per step
    step_phases: list[str] = field(default_factory=list)       # "phase" hooks reported
    step_losses: list[float] = field(default_factory=list)     # task loss per step
    hook_seconds: dict[str, list[float]] = field(default_factory=dict)  # per hook, per step
    evaluations: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # eval_every
    selection_step: int | None = None   # step after which a hook first reported "trained"
    train_s: float = 0.0
    eval_s: float = 0.0
    trainable_after_selection: int | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _result_state(result: TrainResult, runner: HookRunner) -> dict[str, Any]:
    state = dataclasses.asdict(result)
    state["hook_seconds"] = {k: list(v) for k, v in runner.seconds.items()}
    return state


def train_model(model: nn.Module, train: EncodedDataset, validation: EncodedDataset, *,
                num_labels: int, epochs: int, steps_per_epoch: int, batch_size: int, lr: float,
                pad_id: int, device: torch.device, hooks: Sequence[TrainingHook] = (),
                max_steps: int | None = None, seed: int = 0, weight_decay: float = 0.0,
                rank: int = 0, world_size: int = 1, progress: bool = True,
                count_trainable: Callable[[], int] | None = None,
                eval_model: nn.Module | None = None, eval_every: int | None = None,
                eval_each_epoch: bool = True, save_every: int | None = None,
                checkpoint_dir: str | os.PathLike[str] | None = None,
                resume_from: str | os.PathLike[str] | None = None,
                fingerprint: dict[str, Any] | None = None,
                on_resume: Callable[[Any], None] | None = None,
                save_steps: Collection[int] = (),
                resume_may_differ: Collection[str] = ()) -> TrainResult:
    """Train for ``epochs`` × ``steps_per_epoch`` steps (or ``max_steps``), evaluating each epoch.

    Each epoch draws a fresh seeded permutation of the training set and takes its first
    ``steps_per_epoch`` batches of ``batch_size`` (the global batch: with ``world_size``
    processes, process ``rank`` computes rows ``rank::world_size`` of it). ``eval_model`` is
    the module evaluated each epoch and handed to the hooks (the unwrapped model under DDP;
    default ``model``).

    Every step runs the hooks' moments (:mod:`graphopt.peft.hooks`): the loss is
    L_task + Σ_h loss_term_h, ``before_optimizer_step`` runs after ``backward()`` (under DDP:
    after the all-reduce), ``after_optimizer_step`` after ``optimizer.step()`` and before the
    gradients are cleared. Reported losses are the task loss. A hook's ``step_info()``
    ``"phase"`` labels the step (default ``"train"``); the first step after which it reads
    ``"trained"`` is the selection step.

    ``eval_every=N`` also evaluates after every N-th step and after the last one (recorded in
    ``TrainResult.evaluations``; step 0 is the model before training);
    ``eval_each_epoch=False`` skips the per-epoch validation.

    Checkpoints (:mod:`graphopt.peft.checkpoint`): with ``save_every`` = N, the state after
    every N-th optimiser step is written to ``checkpoint_dir`` (after the epoch's validation
    when the step ends an epoch); ``resume_from`` continues from the last complete
    checkpoint there, which must carry the same ``fingerprint``. The data order is restored
    by replaying the epoch's permutation from its saved generator state and skipping the
    batches already done, so a resumed run takes the same steps, with the same dropout
    masks, as an uninterrupted one. ``on_resume(checkpoint)`` is called once it is loaded.
    ``save_steps`` are further steps to save after (also without ``save_every``), and
    ``resume_may_differ`` the config options of ``fingerprint`` that the checkpoint may have
    set differently (the caller checks them; see ``graphopt finetune --branch-from``).
    """
    from tqdm.auto import tqdm

    from graphopt.peft.checkpoint import load_checkpoint, save_checkpoint

    if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int)
                                   or save_every < 1):
        raise ValueError(f"save_every must be a positive int, got {save_every!r}")
    save_steps = frozenset(int(k) for k in save_steps)
    if (save_every is not None or save_steps) and checkpoint_dir is None:
        raise ValueError("save_every and save_steps need checkpoint_dir")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    result = TrainResult()
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    step = 0
    show = progress and rank == 0
    # The hooks act on the parameters themselves, so they get the unwrapped module.
    hook_model = eval_model if eval_model is not None else model
    runner = HookRunner(hooks, hook_model, sync=lambda: _sync(device))
    runner.on_train_begin(steps_per_epoch)
    # Where the loop is: the epoch, batches of it done, the data-order generator's state
    # before the epoch's permutation, and the epoch's training seconds so far.
    start_epoch, position, epoch_seconds = 0, 0, 0.0
    order_state = rng.bit_generator.state
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, model=hook_model, optimizer=optimizer,
                               hooks=runner.hooks, fingerprint=fingerprint,
                               may_differ=resume_may_differ)
        loop = ckpt.loop
        saved = loop["result"]
        runner.seconds = {k: list(v) for k, v in saved.pop("hook_seconds").items()}
        result = TrainResult(**saved, hook_seconds=runner.seconds)
        step = ckpt.step
        start_epoch, position = int(loop["epoch"]), int(loop["position"])
        epoch_seconds = float(loop["epoch_train_s"])
        order_state = loop["order_rng_state"]
        if show:
            print(f"resumed from {ckpt.path} at step {step}", file=sys.stderr)
        if on_resume is not None:
            on_resume(ckpt)

    def save(epoch: int, pos: int, epoch_s: float, state: dict[str, Any]) -> None:
        save_checkpoint(checkpoint_dir, step=step, model=hook_model, optimizer=optimizer,
                        hooks=runner.hooks, fingerprint=fingerprint,
                        loop={"epoch": epoch, "position": pos, "epoch_train_s": epoch_s,
                              "order_rng_state": state,
                              "result": _result_state(result, runner)})

    def save_due() -> bool:
        return (save_every is not None and step % save_every == 0) or step in save_steps


    def validate(desc: str) -> dict[str, float]:
        return evaluate(hook_model, validation, batch_size=2 * batch_size, pad_id=pad_id,
                        device=device, num_labels=num_labels, desc=desc, progress=show)

    if eval_every and step == 0:
        result.evaluations.append((0, validate("validation")))
    model.train()
    for epoch in range(start_epoch, epochs):
        if step >= total and position == 0:
            break
        t_epoch = time.perf_counter() - epoch_seconds
        rng.bit_generator.state = order_state
        epoch_batches = batches(len(train), batch_size, rng)[:steps_per_epoch]
        # Steps of this epoch already taken before a resume (their losses are in result).
        losses = result.step_losses[len(result.step_losses) - position:] if position else []
        todo = epoch_batches[position:position + total - step]
        bar = tqdm(todo, desc=f"epoch {epoch + 1}/{epochs}", initial=position,
                   total=position + len(todo), disable=not show, file=sys.stderr,
                   dynamic_ncols=True)
        for i, idx in enumerate(bar):
            _sync(device)
            t0 = time.perf_counter()
            c0 = time.process_time()
            phase = runner.step_info().get("phase", "train")
            local = idx[rank::world_size] if world_size > 1 else idx
            out = model(**collate(train, local, pad_id, device))
            objective = out.loss
            term = runner.loss_term()
            if term is not None:
                objective = objective + term
            objective.backward()
            runner.before_optimizer_step()
            optimizer.step()
            runner.after_optimizer_step()
            runner.end_step()
            _sync(device)
            info = runner.step_info()
            if result.selection_step is None and info.get("phase") == "trained":
                result.selection_step = step + 1
                if count_trainable is not None:
                    result.trainable_after_selection = count_trainable()
            optimizer.zero_grad(set_to_none=True)
            result.step_times.append(time.perf_counter() - t0)
            # CPU seconds of this process (all threads): robust to other processes' load.
            result.step_cpu_times.append(time.process_time() - c0)
            result.step_phases.append(phase)
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {step + 1}; "
                                         f"lower --lr")
            losses.append(loss)
            result.step_losses.append(loss)
            step += 1
            postfix = {"loss": f"{loss:.3f}", "phase": phase}
            postfix.update({k.removeprefix("spectral_"): f"{v:.3g}" for k, v in info.items()
                            if isinstance(v, float)})
            bar.set_postfix(postfix)
            if eval_every and (step % eval_every == 0 or step == total):
                result.evaluations.append((step, validate("validation")))
            # The step that ends this epoch's batches is saved after the validation below.
            if i < len(todo) - 1 and save_due():
                save(epoch, position + i + 1, time.perf_counter() - t_epoch, order_state)
        bar.close()
        position = 0
        order_state = rng.bit_generator.state  # after this epoch's permutation
        train_time = time.perf_counter() - t_epoch
        t_eval = time.perf_counter()
        val = validate("validation") if eval_each_epoch else None
        eval_time = time.perf_counter() - t_eval
        result.train_s += train_time
        result.eval_s += eval_time
        record = {"epoch": epoch + 1, "steps": len(losses), "global_step": step,
                  "train_loss": float(np.mean(losses)) if losses else None,
                  "validation": val, "train_s": train_time, "eval_s": eval_time}
        if "phase" in runner.step_info():
            record["phase_at_end"] = runner.step_info()["phase"]
        result.epochs.append(record)
        if show and val is not None:
            print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}  "
                  f"validation accuracy {val['accuracy']:.4f}  macro-F1 {val['macro_f1']:.4f}",
                  file=sys.stderr)
        if todo and save_due():
            save(epoch + 1, 0, 0.0, order_state)
    runner.on_train_end()
    result.hook_seconds = runner.seconds
    return result
