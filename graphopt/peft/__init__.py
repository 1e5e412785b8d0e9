"""Parameter-efficient fine-tuning with principal-component nodes and GGM allocation.

The verbs mirror Hugging Face peft: :func:`get_graphopt_model`, ``print_trainable_parameters``,
``save_adapter`` / :func:`load_adapter`, ``merge_and_unload``. Allocation runs from a plain
loop (:class:`GGMAllocator`), from ``transformers.Trainer`` (:class:`GGMAllocationCallback`)
or from the CLI (``graphopt finetune``). Spectral coordination (Dirichlet regulariser and
gradient filter) lives in :class:`SpectralRegularizer` and :class:`SpectralGradientFilter`.
"""

from __future__ import annotations

from .allocation import Allocation, allocate
from .callbacks import GGMAllocationCallback, GGMAllocator
from .config import SELECTION_POLICIES, GGMConfig
from .layers import PCLayer
from .model import AdapterNode, GraphoptModel, get_graphopt_model, load_adapter
from .param_graph import ParameterGraph, build_parameter_graph
from .scoring import NodeScorer
from .spectral_filter import SpectralFilterCallback, SpectralGradientFilter
from .spectral_reg import SpectralRegularizer, SpectralTrainer

__all__ = [
    "GGMConfig",
    "SELECTION_POLICIES",
    "PCLayer",
    "AdapterNode",
    "GraphoptModel",
    "get_graphopt_model",
    "load_adapter",
    "NodeScorer",
    "Allocation",
    "allocate",
    "GGMAllocator",
    "GGMAllocationCallback",
    "ParameterGraph",
    "build_parameter_graph",
    "SpectralRegularizer",
    "SpectralTrainer",
    "SpectralGradientFilter",
    "SpectralFilterCallback",
]
