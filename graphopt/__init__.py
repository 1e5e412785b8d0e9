"""graphopt: graph-structured optimisation for fine-tuning.

Layers (data flows one way):

- ``graphopt`` (core): graphs, Laplacians, spectra, filters, energies.
- ``graphopt.solvers``: exact references (cvxpy, scikit-learn) and fast torch solvers for
  Gaussian graphical models, with optimality certificates.
- ``graphopt.peft``: principal-component adapters, GGM-based allocation and spectral
  coordination for Hugging Face transformers.
"""

from __future__ import annotations

from .exceptions import ConvergenceWarning, RegularizationWarning

__version__ = "0.1.0"

__all__ = ["ConvergenceWarning", "RegularizationWarning", "__version__"]
