"""graphopt: graph-structured optimisation for fine-tuning.

Layers (data flows one way):

- ``graphopt`` (core): graphs (:func:`knn_graph`, :func:`similarity_graph`, :func:`laplacian`),
  energies (:func:`dirichlet_energy`), spectra and filters (:func:`graph_spectrum`,
  :class:`SpectralFilter`, :func:`spectral_filter`, responses :func:`heat`, :func:`tikhonov`,
  :func:`lowpass`).
- ``graphopt.solvers``: exact references (cvxpy, scikit-learn) and fast torch solvers for
  Gaussian graphical models, with optimality certificates.
- ``graphopt.peft``: principal-component adapters, GGM-based allocation and spectral
  coordination for Hugging Face transformers.
"""

from __future__ import annotations

from .energy import dirichlet_energy
from .exceptions import ConvergenceWarning, RegularizationWarning
from .graph import degrees, knn_graph, laplacian, similarity_graph
from .responses import Response, heat, lowpass, parse_response, tikhonov
from .spectral import GraphSpectrum, SpectralFilter, graph_spectrum, spectral_filter

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "RegularizationWarning",
    "knn_graph",
    "similarity_graph",
    "laplacian",
    "degrees",
    "dirichlet_energy",
    "Response",
    "heat",
    "tikhonov",
    "lowpass",
    "parse_response",
    "GraphSpectrum",
    "graph_spectrum",
    "SpectralFilter",
    "spectral_filter",
    "__version__",
]
