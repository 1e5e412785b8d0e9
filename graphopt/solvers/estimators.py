"""scikit-learn estimators for the graphical lasso: thin shells around :func:`graphical_lasso`.

``GraphicalLasso`` fits one α; ``GraphicalLassoCV`` picks α by K-fold cross-validated Gaussian
log-likelihood over a grid that it refines around the best value (as scikit-learn's does),
solving each fold's grid as a warm-started path. Both inherit ``score`` (the Gaussian
log-likelihood of held-out data), ``mahalanobis`` and ``error_norm`` from
``sklearn.covariance.EmpiricalCovariance``.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.covariance import EmpiricalCovariance, empirical_covariance, log_likelihood
from sklearn.model_selection import check_cv

from ..exceptions import ConvergenceWarning
from .graphical_lasso import check_method, graphical_lasso, graphical_lasso_path

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est: Any, X: Any, **kw: Any) -> np.ndarray:
        return est._validate_data(X, **kw)

__all__ = ["GraphicalLasso", "GraphicalLassoCV"]


class _GraphicalLassoBase(EmpiricalCovariance):
    """Shared parameter checks, data handling and the solve for both estimators."""

    def _check_common(self) -> None:
        check_method(self.method)
        if not isinstance(self.tol, numbers.Real) or not self.tol > 0:
            raise ValueError(f"tol must be a number > 0, got {self.tol!r}")
        if self.max_iter is not None and (
            isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral)
            or self.max_iter < 1
        ):
            raise ValueError(f"max_iter must be None or an integer >= 1, got {self.max_iter!r}")

    def _data_covariance(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        # Two samples are the fewest with a defined covariance; one feature is a valid (p = 1)
        # graphical lasso, so unlike scikit-learn we do not require two features.
        X = _validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        location = np.zeros(X.shape[1]) if self.assume_centered else X.mean(axis=0)
        return X, location

    def _solve(self, emp_cov: np.ndarray, alpha: float) -> None:
        res = graphical_lasso(emp_cov, alpha, method=self.method, tol=self.tol,
                              max_iter=self.max_iter, penalize_diagonal=self.penalize_diagonal,
                              screen=self.screen)
        self.covariance_ = res.covariance
        self.precision_ = res.precision
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self.dual_gap_ = float(res.dual_gap)
        self.relative_gap_ = float(res.relative_gap)
        self.dual_covariance_ = res.dual_covariance
        self.block_sizes_ = res.block_sizes

    def get_precision(self) -> np.ndarray:
        """The estimated precision matrix Θ (sparse, positive definite)."""
        return self.precision_


class GraphicalLasso(_GraphicalLassoBase):
    """Sparse inverse covariance by the graphical lasso at a fixed α.

    minimise_{Θ ≻ 0}  −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|,   S = empirical covariance of X.

    Parameters
    ----------
    alpha : float >= 0, default 0.01. The ℓ1 weight.
    method : {"auto", "admm", "bcd", "quic"}, default "auto". See :func:`graphical_lasso`.
    penalize_diagonal : bool, default False. Penalise the diagonal too.
    tol : float > 0, default 1e-6. Certified relative duality-gap tolerance.
    max_iter : int >= 1 or None (the method's default).
    assume_centered : bool, default False. Do not subtract the mean before S is computed.
    screen : bool, default True. Exact screening: solve the connected components of
        |S_ij| > α separately (see :func:`graphical_lasso`).

    Attributes
    ----------
    location_ : the column means of X (zeros when ``assume_centered``).
    covariance_ : W = Θ⁻¹, the estimated covariance.
    precision_ : Θ, the estimated sparse precision matrix.
    n_iter_ : iterations the solver ran.
    converged_ : whether the solver met ``tol``.
    dual_gap_ : the certified gap f(Θ) − (log det W̃ + p) ≥ f(Θ) − f* of the returned Θ (≥ 0).
    relative_gap_ : dual_gap_ / max(|f(Θ)|, 1), the quantity ``tol`` bounds.
    dual_covariance_ : W̃, the dual-feasible point that certifies it (recompute the bound
        with NumPy: see docs/solvers.md).
    block_sizes_ : the blocks exact screening split the problem into.
    """

    def __init__(self, alpha: float = 0.01, *, method: str = "auto",
                 penalize_diagonal: bool = False, tol: float = 1e-6,
                 max_iter: int | None = None, assume_centered: bool = False,
                 screen: bool = True) -> None:
        self.alpha = alpha
        self.method = method
        self.penalize_diagonal = penalize_diagonal
        self.tol = tol
        self.max_iter = max_iter
        self.assume_centered = assume_centered
        self.screen = screen

    def fit(self, X: Any, y: Any = None) -> GraphicalLasso:
        """Estimate location, covariance and sparse precision from X (n_samples, n_features)."""
        self._check_common()
        if not isinstance(self.alpha, numbers.Real) or not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        X, self.location_ = self._data_covariance(X)
        emp_cov = empirical_covariance(X, assume_centered=self.assume_centered)
        self._solve(emp_cov, float(self.alpha))
        return self


def _alpha_grid(emp_cov: np.ndarray, n_alphas: int) -> np.ndarray:
    """n_alphas log-spaced values from α_max = max_{i≠j}|S_ij| (Θ diagonal there) down to
    α_max / 100, as scikit-learn does."""
    p = emp_cov.shape[0]
    off = np.abs(emp_cov[~np.eye(p, dtype=bool)]) if p > 1 else np.zeros(1)
    alpha_max = float(off.max()) if off.size else 0.0
    alpha_max = alpha_max if alpha_max > 0 else 1.0
    return np.logspace(np.log10(alpha_max), np.log10(alpha_max / 100), n_alphas)


class GraphicalLassoCV(_GraphicalLassoBase):
    """Graphical lasso with α chosen by cross-validated Gaussian log-likelihood.

    Parameters
    ----------
    alphas : int >= 2 or array-like of floats >= 0, default 4. An int gives that many
        log-spaced values below α_max and is refined ``n_refinements`` times around the best;
        an explicit list is used as given (no refinement).
    n_refinements : int >= 0, default 4.
    cv : int, splitter or iterable, default None (5-fold), as in scikit-learn.
    method, penalize_diagonal, tol, max_iter, assume_centered, screen : as
        :class:`GraphicalLasso`.

    Attributes
    ----------
    alpha_ : the selected α.
    cv_results_ : dict with "alphas", "split{k}_test_score", "mean_test_score" and
        "std_test_score" (sorted by decreasing α).
    location_, covariance_, precision_, n_iter_, converged_, dual_gap_, relative_gap_,
    dual_covariance_, block_sizes_ : those of
        :class:`GraphicalLasso` refitted at ``alpha_`` on all of X.
    """

    def __init__(self, *, alphas: int | Any = 4, n_refinements: int = 4, cv: Any = None,
                 method: str = "auto", penalize_diagonal: bool = False, tol: float = 1e-6,
                 max_iter: int | None = None, assume_centered: bool = False,
                 screen: bool = True) -> None:
        self.alphas = alphas
        self.n_refinements = n_refinements
        self.cv = cv
        self.method = method
        self.penalize_diagonal = penalize_diagonal
        self.tol = tol
        self.max_iter = max_iter
        self.assume_centered = assume_centered
        self.screen = screen

    def _fold_scores(self, X: np.ndarray, splits: list, alphas: np.ndarray) -> np.ndarray:
        """Held-out log-likelihood, shape (n_splits, n_alphas), each fold a warm-started path."""
        scores = np.empty((len(splits), alphas.size))
        for k, (train, test) in enumerate(splits):
            cov_train = empirical_covariance(X[train], assume_centered=self.assume_centered)
            loc = np.zeros(X.shape[1]) if self.assume_centered else X[train].mean(axis=0)
            cov_test = empirical_covariance(X[test] - loc, assume_centered=True)
            with warnings.catch_warnings():
                # Grid points far from the selected α need not be solved to the last digit;
                # the refit at alpha_ still warns if it does not converge.
                warnings.simplefilter("ignore", ConvergenceWarning)
                path = graphical_lasso_path(cov_train, alphas, method=self.method, tol=self.tol,
                                            max_iter=self.max_iter,
                                            penalize_diagonal=self.penalize_diagonal,
                                            screen=self.screen)
            scores[k] = [log_likelihood(cov_test, r.precision) for r in path]
        return np.where(np.isfinite(scores), scores, -np.inf)

    def fit(self, X: Any, y: Any = None) -> GraphicalLassoCV:
        """Choose α by cross-validation, then fit the graphical lasso on all of X at α."""
        self._check_common()
        if isinstance(self.n_refinements, bool) or not isinstance(self.n_refinements, numbers.Integral) \
                or self.n_refinements < 0:
            raise ValueError(f"n_refinements must be an integer >= 0, got {self.n_refinements!r}")
        X, self.location_ = self._data_covariance(X)
        emp_cov = empirical_covariance(X, assume_centered=self.assume_centered)
        if isinstance(self.alphas, numbers.Integral) and not isinstance(self.alphas, bool):
            if self.alphas < 2:
                raise ValueError(f"alphas must be >= 2 when an integer, got {self.alphas}")
            alphas = _alpha_grid(emp_cov, int(self.alphas))
            n_ref = int(self.n_refinements)
        else:
            alphas = np.sort(np.asarray(self.alphas, dtype=np.float64).ravel())[::-1]
            if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
                raise ValueError(f"alphas must be finite values >= 0, got {self.alphas!r}")
            n_ref = 0
        splits = list(check_cv(self.cv).split(X))
        all_alphas, all_scores = [alphas], [self._fold_scores(X, splits, alphas)]
        for _ in range(n_ref):
            grid = np.concatenate(all_alphas)
            scores = np.concatenate(all_scores, axis=1)
            order = np.argsort(-grid)
            grid, scores = grid[order], scores[:, order]
            best = int(np.argmax(scores.mean(axis=0)))
            # Refine between the neighbours of the best α (sklearn's scheme), excluding ends.
            hi = grid[max(best - 1, 0)]
            lo = grid[min(best + 1, grid.size - 1)]
            if best == 0:
                hi = grid[0]
            if hi <= lo:
                break
            new = np.logspace(np.log10(hi), np.log10(max(lo, hi * 1e-12)), alphas.size + 2)[1:-1]
            all_alphas.append(new)
            all_scores.append(self._fold_scores(X, splits, new))
        grid = np.concatenate(all_alphas)
        scores = np.concatenate(all_scores, axis=1)
        order = np.argsort(-grid, kind="stable")
        grid, scores = grid[order], scores[:, order]
        mean = scores.mean(axis=0)
        self.alpha_ = float(grid[int(np.argmax(mean))])
        self.cv_results_ = {"alphas": grid, "mean_test_score": mean,
                            "std_test_score": scores.std(axis=0)}
        for k in range(scores.shape[0]):
            self.cv_results_[f"split{k}_test_score"] = scores[k]
        self._solve(emp_cov, self.alpha_)
        return self
