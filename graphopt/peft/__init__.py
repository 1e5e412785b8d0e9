"""Parameter-efficient fine-tuning with principal-component nodes and GGM allocation.

The verbs mirror Hugging Face peft: :func:`get_graphopt_model`, ``print_trainable_parameters``,
``save_adapter`` / :func:`load_adapter`, ``merge_and_unload``; :func:`export_lora` writes
a trained model as a standard Hugging Face peft LoRA adapter. Everything that acts during
training is a :class:`TrainingHook`: the GGM allocation (:class:`GGMAllocator`) and the
spectral coordination (:class:`SpectralCoordination`: Dirichlet regulariser and gradient
filter). Hooks run in :func:`~graphopt.peft.train.train_model`, in a plain loop through
:func:`attach_to_optimizer`, in ``transformers.Trainer`` through :class:`GraphoptCallback`,
or from the CLI (``graphopt finetune``). :func:`save_checkpoint` / :func:`load_checkpoint`
checkpoint and resume any of these loops (model, optimiser, hook states, RNG states).
:class:`GGMConfig`, :class:`SpectralConfig` and
:class:`TrainConfig` hold every default.
"""

from __future__ import annotations

from .allocation import Allocation, allocate
from .allocator import GGMAllocator
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .config import SELECTION_POLICIES, GGMConfig, SpectralConfig, TrainConfig
from .hooks import GraphoptCallback, TrainingHook, attach_to_optimizer, extra_loss
from .export import LoRAExport, export_lora
from .layers import PCLayer
from .model import AdapterNode, GraphoptModel, get_graphopt_model, load_adapter
from .param_graph import ParameterGraph, build_parameter_graph
from .scoring import NodeScorer
from .spectral_coordination import SpectralCoordination, build_spectral_coordination
from .spectral_filter import SpectralGradientFilter
from .spectral_reg import SpectralRegularizer

__all__ = [
    "GGMConfig",
    "SpectralConfig",
    "TrainConfig",
    "SELECTION_POLICIES",
    "PCLayer",
    "AdapterNode",
    "GraphoptModel",
    "get_graphopt_model",
    "load_adapter",
    "export_lora",
    "LoRAExport",
    "NodeScorer",
    "Allocation",
    "allocate",
    "GGMAllocator",
    "TrainingHook",
    "attach_to_optimizer",
    "extra_loss",
    "GraphoptCallback",
    "ParameterGraph",
    "build_parameter_graph",
    "SpectralRegularizer",
    "SpectralGradientFilter",
    "SpectralCoordination",
    "build_spectral_coordination",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
]
