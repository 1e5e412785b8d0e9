"""Graphical lasso solvers side by side: graphopt against scikit-learn, gglasso and cvxpy.

    python benchmarks/solvers.py              # full run (< 30 min), benchmarks/results/solvers.json
    python benchmarks/solvers.py --quick      # smoke run (< 2 min), solvers_quick.json
    python benchmarks/solvers.py --case digits --methods graphopt-admm,sklearn-enet
    python benchmarks/solvers.py --render docs/solvers.md   # table from the JSON into the docs

Data: several generators (scikit-learn's ``make_sparse_spd_matrix`` at several sparsities,
chain, hub and block precision matrices; n < p as well as n > p) and real correlation
matrices (scikit-learn's bundled data sets; the sentence embeddings of the default model over
the BBC News texts; the covariance of the default model's FFN weight rows), p from 10 to
2000, and 5000 where screening splits the problem; several α per problem, from dense
solutions (α at the median |S_ij|) to sparse ones.

Every solver runs in a worker process of its own with one thread (OMP/MKL/OpenBLAS and
torch), reused across cases; a call that exceeds its time budget is killed and recorded as
"timeout" (and the method is skipped on larger cases of the same family). Per call: seconds,
iterations, the objective f(Θ) (float64, ``graphopt.solvers.glasso_objective``), its gap to
the best objective any converged solver reached on that case, and the certified relative gap
of the returned Θ (``graphopt.solvers.reference.glasso_certificate``: the same check for
every solver, with W̃ the projection of Θ⁻¹; graphopt's own gap, with its best dual point,
is ``own_certified_rel_gap``). A run is *solved* when it reports convergence and its gap to the best is
≤ 1e-6 relative (the accuracy graphopt certifies at its default tol); the summary gives, per
peer, the median and worst ratio peer seconds / graphopt-admm seconds over the cases both
solved, and counts the rest. Only graphopt's public API is used.
"""

from __future__ import annotations

import os

# One thread per solver, set before NumPy/torch are imported here and inherited by workers.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
# Python puts this script's folder first on sys.path, where benchmarks/peft.py would shadow
# Hugging Face's peft (imported by transformers); the checkout's graphopt goes first instead.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
CACHE = HERE / "cache"
RESULTS = HERE / "results"
MARK_START = "<!-- solvers-benchmark:start -->"
MARK_END = "<!-- solvers-benchmark:end -->"
SOLVED_GAP = 1e-6          # relative gap to the best objective that counts as solved
GRAPHOPT_TOL = 1e-6        # graphopt's default tol: certified relative gap
REPEAT_BELOW_S = 0.25      # calls faster than this are repeated ...
REPEATS = 5                # ... up to this many times in all ...
REPEAT_BUDGET_S = 1.0      # ... while their total stays below this; the median is reported
DEFAULT = "graphopt-auto"  # the method the ratios are taken against (graphical_lasso's default)
PEERS = ["sklearn", "gglasso", "cvxpy"]

METHODS = ["graphopt-auto", "graphopt-admm", "graphopt-bcd", "graphopt-quic", "graphopt-admm-noscreen",
           "sklearn-default", "sklearn-enet", "gglasso", "cvxpy"]


# ----------------------------------------------------------------------------- data
def _correlation(S: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(S), 1e-300, None))
    R = S / np.outer(d, d)
    R = 0.5 * (R + R.T)
    np.fill_diagonal(R, 1.0)
    return R


def _sample_correlation(theta: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sample correlation of n draws from N(0, Θ⁻¹) (Θ positive definite), via Cholesky."""
    L = np.linalg.cholesky(theta)
    Z = rng.standard_normal((n, theta.shape[0]))
    X = np.linalg.solve(L.T, Z.T).T          # Cov = (L Lᵀ)⁻¹ = Θ⁻¹
    X -= X.mean(axis=0)
    return _correlation(X.T @ X / n)


def sparse_spd(p: int, n: int, sparsity: float, seed: int) -> np.ndarray:
    """scikit-learn's make_sparse_spd_matrix (sparsity = probability of a zero) as Θ."""
    from sklearn.datasets import make_sparse_spd_matrix

    theta = make_sparse_spd_matrix(n_dim=p, alpha=sparsity, smallest_coef=0.1,
                                   largest_coef=0.9, norm_diag=True, random_state=seed)
    return _sample_correlation(theta, n, np.random.default_rng(seed))


def user_sparse_spd(p: int, n: int, seed: int) -> np.ndarray:
    """What a new user tries first: ``make_sparse_spd_matrix(p)`` at its defaults (95 %
    zeros) as Θ, n draws of N(0, Θ⁻¹) by NumPy's sampler, their correlation."""
    from sklearn.datasets import make_sparse_spd_matrix

    theta = make_sparse_spd_matrix(n_dim=p, random_state=seed)
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(theta), size=n)
    return _correlation(np.cov(X, rowvar=False))


def chain(p: int, n: int, seed: int) -> np.ndarray:
    """Banded (AR(1)-like) precision: Θ = tridiag(−0.45, 1, −0.45)."""
    theta = np.eye(p) - 0.45 * (np.eye(p, k=1) + np.eye(p, k=-1))
    return _sample_correlation(theta, n, np.random.default_rng(seed))


def hub(p: int, n: int, hub_size: int, seed: int) -> np.ndarray:
    """Hub graph: groups of hub_size nodes, each node linked to its group's hub."""
    rng = np.random.default_rng(seed)
    theta = np.eye(p)
    for start in range(0, p, hub_size):
        members = np.arange(start + 1, min(start + hub_size, p))
        w = rng.uniform(0.2, 0.4, members.size) * rng.choice([-1, 1], members.size)
        theta[start, members] = theta[members, start] = w / np.sqrt(max(members.size, 1)) * 2
    theta += np.eye(p) * max(0.0, 0.1 - np.linalg.eigvalsh(theta)[0])
    return _sample_correlation(theta, n, rng)


def blocks(p: int, n_blocks: int, seed: int, factor: float = 0.7) -> np.ndarray:
    """Block-diagonal correlation: in each block a common factor plus noise (2k samples),
    exact zeros across; shuffled so that the blocks are not contiguous."""
    rng = np.random.default_rng(seed)
    sizes = np.full(n_blocks, p // n_blocks)
    sizes[: p - sizes.sum()] += 1
    S = np.zeros((p, p))
    start = 0
    for k in sizes:
        X = rng.standard_normal((2 * k, k)) + factor * rng.standard_normal((2 * k, 1))
        S[start:start + k, start:start + k] = np.corrcoef(X, rowvar=False)
        start += k
    perm = rng.permutation(p)
    return _correlation(S[np.ix_(perm, perm)])


def sklearn_dataset(name: str) -> np.ndarray:
    """Correlation of a data set bundled with scikit-learn (constant columns dropped)."""
    from sklearn import datasets

    X = getattr(datasets, f"load_{name}")().data.astype(np.float64)
    X = X[:, X.std(axis=0) > 0]
    return _correlation(np.cov(X, rowvar=False))


def _cached(name: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.npy"
    if path.exists():
        return np.load(path)
    S = build()
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, S)
    tmp.replace(path)  # atomic: a killed run leaves no half-written cache
    return S


def bbc_embeddings() -> np.ndarray:
    """Correlation (p = 384) of the default model's sentence embeddings of the BBC News texts."""
    def build() -> np.ndarray:
        import torch
        from sentence_transformers import SentenceTransformer

        from graphopt.peft.data import load_bbc_news
        from graphopt.peft.finetune import default_model_path

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        data, _ = load_bbc_news()
        model = SentenceTransformer(str(default_model_path()), device="cpu")
        E = model.encode(data.texts, batch_size=64, show_progress_bar=False,
                         convert_to_numpy=True)
        return _correlation(np.cov(E.astype(np.float64), rowvar=False))
    return _cached("bbc_minilm_embeddings_corr", build)


def weight_rows() -> np.ndarray:
    """Correlation (p = 384) of the rows of the default model's FFN input weights, all layers
    stacked (6 × 1536 rows of length 384)."""
    def build() -> np.ndarray:
        from safetensors.numpy import load_file

        from graphopt.peft.finetune import default_model_path

        tensors = load_file(str(default_model_path() / "model.safetensors"))
        rows = [v for k, v in sorted(tensors.items())
                if k.endswith("intermediate.dense.weight")]
        W = np.concatenate(rows).astype(np.float64)
        return _correlation(np.cov(W, rowvar=False))
    return _cached("minilm_ffn_weight_rows_corr", build)


@dataclass
class Case:
    """One matrix and its α grid. α are quantiles of |S_ij| (i ≠ j) unless given."""

    name: str
    family: str
    build: Callable[[], np.ndarray]
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.98)
    methods: tuple[str, ...] | None = None       # None: all applicable
    note: str = ""
    p: int = 0
    n: int | None = None
    alphas: list[float] = field(default_factory=list)
    fixed_alphas: tuple[float, ...] | None = None  # α as given (the quantile column: None)


def cases(quick: bool) -> list[Case]:
    """The benchmark's problems (quick: p ≤ 100, two α each)."""
    if quick:
        q = (0.6, 0.95)
        return [
            Case("sparse_spd-p50-n100-s0.9", "sparse_spd", lambda: sparse_spd(50, 100, 0.9, 0), q),
            Case("chain-p60-n30", "chain", lambda: chain(60, 30, 1), q),
            Case("hub-p60-n120", "hub", lambda: hub(60, 120, 10, 2), q),
            Case("blocks-p80-b4", "blocks", lambda: blocks(80, 4, 3), (0.8, 0.95)),
            Case("wine", "real", lambda: sklearn_dataset("wine"), q),
            Case("breast_cancer", "real", lambda: sklearn_dataset("breast_cancer"), q),
            Case("digits", "real", lambda: sklearn_dataset("digits"), q),
        ]
    spd = [Case(f"sparse_spd-p{p}-n{n}-s{s}", "sparse_spd",
                (lambda p=p, n=n, s=s, i=i: sparse_spd(p, n, s, 10 + i)))
           for i, (p, n, s) in enumerate([(30, 60, 0.9), (100, 200, 0.9), (100, 50, 0.98),
                                          (300, 150, 0.95), (500, 1000, 0.98),
                                          (1000, 500, 0.99), (2000, 4000, 0.995)])]
    return spd + [
        Case("chain-p200-n100", "chain", lambda: chain(200, 100, 1)),
        Case("chain-p1000-n2000", "chain", lambda: chain(1000, 2000, 2), (0.9, 0.98)),
        Case("hub-p300-n600", "hub", lambda: hub(300, 600, 20, 3)),
        Case("blocks-p1000-b10", "blocks", lambda: blocks(1000, 10, 4), (0.8, 0.95)),
        Case("blocks-p5000-b20", "blocks", lambda: blocks(5000, 20, 5), (0.9,),
             methods=("graphopt-auto", "graphopt-admm", "graphopt-bcd", "sklearn-enet",
                      "gglasso"),
             note="screening splits it into ≥ 20 blocks"),
        # A new user's first tries, at fixed α: scikit-learn's default generator
        # (make_sparse_spd_matrix, 95 % zeros), n = 2p samples, α = 0.1; n = p, α = 0.2.
        *[Case(f"user-sparse_spd-p{p}-n{2 * p}", "user",
               (lambda p=p: user_sparse_spd(p, 2 * p, 0)), fixed_alphas=(0.1,))
          for p in (100, 200, 400)],
        Case("user-sparse_spd-p1000-n1000", "user", lambda: user_sparse_spd(1000, 1000, 0),
             fixed_alphas=(0.2,)),
        Case("user-breast_cancer", "user", lambda: sklearn_dataset("breast_cancer"),
             fixed_alphas=(0.05,)),
        Case("user-digits", "user", lambda: sklearn_dataset("digits"), fixed_alphas=(0.05,)),
        Case("diabetes", "real", lambda: sklearn_dataset("diabetes")),
        Case("wine", "real", lambda: sklearn_dataset("wine")),
        Case("breast_cancer", "real", lambda: sklearn_dataset("breast_cancer")),
        Case("digits", "real", lambda: sklearn_dataset("digits")),
        Case("bbc-minilm-embeddings", "real", bbc_embeddings),
        Case("minilm-ffn-weight-rows", "real", weight_rows),
    ]


def alpha_grid(S: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """α at quantiles of |S_ij| (i ≠ j): 0.5 gives a dense solution, 0.98 a sparse one."""
    p = S.shape[0]
    off = np.abs(S[~np.eye(p, dtype=bool)])
    off = off[off > 0] if np.any(off > 0) else np.array([1.0])
    return [float(np.quantile(off, q)) for q in quantiles]


# ----------------------------------------------------------------------------- solvers
def _applicable(method: str, case: Case, quick: bool) -> bool:
    if case.methods is not None and method not in case.methods:
        return False
    if method == "cvxpy":
        return case.p <= (30 if quick else 60)
    if method == "graphopt-admm-noscreen":
        return case.family == "blocks"
    return True


def _gglasso(S: np.ndarray, alpha: float) -> tuple[np.ndarray, int, bool]:
    from gglasso.solver.single_admm_solver import ADMM_SGL

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sol, info = ADMM_SGL(S, alpha, np.eye(S.shape[0]), max_iter=1000)
    match = re.search(r"after (\d+) iterations", out.getvalue())
    theta = sol["Theta"]
    if np.linalg.eigvalsh(theta)[0] <= 0:  # its sparse iterate; Omega is the PD one
        theta = sol["Omega"]
    return theta, int(match.group(1)) if match else -1, info["status"] == "optimal"


def _solve(method: str, S: np.ndarray, alpha: float) -> tuple[np.ndarray, int, bool, dict]:
    """(Θ, iterations, reported convergence, extras) of one solver call; graphopt's extras
    are its block sizes and its own certified relative gap (with its best dual point)."""
    from graphopt.solvers import graphical_lasso
    from graphopt.solvers.reference import graphical_lasso_cvxpy, graphical_lasso_sklearn

    if method.startswith("graphopt"):
        algo = method.split("-")[1]
        r = graphical_lasso(S, alpha, method=algo, tol=GRAPHOPT_TOL, warn=False,
                            screen=not method.endswith("noscreen"))
        return r.precision, int(r.n_iter), bool(r.converged), {
            "block_sizes": _size_summary(list(r.block_sizes)),
            "own_certified_rel_gap": float(r.relative_gap)}
    if method == "sklearn-default":
        r = graphical_lasso_sklearn(S, alpha)
        return r.precision, r.n_iter, r.converged, {}
    if method == "sklearn-enet":
        r = graphical_lasso_sklearn(S, alpha, enet_tol=1e-8)
        return r.precision, r.n_iter, r.converged, {}
    if method == "gglasso":
        theta, it, ok = _gglasso(S, alpha)
        return theta, it, ok, {}
    if method == "cvxpy":
        r = graphical_lasso_cvxpy(S, alpha)
        return r.precision, r.n_iter, r.converged, {}
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def _quiet_solve(method: str, S: np.ndarray, alpha: float) -> tuple[np.ndarray, int, bool, dict]:
    """:func:`_solve` with the solvers' own warnings silenced (the benchmark records status)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _solve(method, S, alpha)


def run_one(method: str, S: np.ndarray, alpha: float) -> dict[str, Any]:
    """Time one solve and evaluate what it returned (outside the timing)."""
    from graphopt.solvers import glasso_objective
    from graphopt.solvers.reference import glasso_certificate

    start = time.perf_counter()
    try:
        theta, n_iter, ok, extras = _quiet_solve(method, S, alpha)
    except FloatingPointError as exc:  # scikit-learn's "Non SPD result"
        return {"status": "failed (Non SPD)", "seconds": time.perf_counter() - start,
                "error": str(exc)[:200]}
    except Exception as exc:  # noqa: BLE001 - a benchmark records failures and goes on
        return {"status": f"error ({type(exc).__name__})", "seconds": time.perf_counter() - start,
                "error": str(exc)[:200]}
    seconds = time.perf_counter() - start
    # A single millisecond-scale call is at the mercy of one cache miss or collector pause
    # (one 30-variable solve read 18.5 ms once and 1.6–2.3 ms in every repeat); fast calls
    # are therefore repeated, for every solver alike, and their median is reported.
    times = [seconds]
    while seconds < REPEAT_BELOW_S and len(times) < REPEATS and sum(times) < REPEAT_BUDGET_S:
        start = time.perf_counter()
        theta, n_iter, ok, extras = _quiet_solve(method, S, alpha)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    theta = 0.5 * (np.asarray(theta, dtype=np.float64) + np.asarray(theta, dtype=np.float64).T)
    obj = float(glasso_objective(S, theta, alpha))
    cert = glasso_certificate(S, theta, alpha)[1] if S.shape[0] <= 2000 else None
    off = ~np.eye(S.shape[0], dtype=bool)
    return {"status": "converged" if ok else "not converged", "seconds": seconds,
            "n_iter": n_iter, "repeats": len(times),
            "objective": obj if np.isfinite(obj) else None,
            "certified_rel_gap": cert if cert is None or np.isfinite(cert) else None,
            "nnz_fraction": float((theta[off] != 0).mean()) if S.shape[0] > 1 else 0.0,
            **extras}


def _size_summary(sizes: list[int]) -> dict[str, int]:
    return {"blocks": len(sizes), "largest": int(max(sizes)), "singletons": sizes.count(1)}


def _worker(conn: Any) -> None:
    """A solver process: one thread, warm imports, then solve what the parent sends."""
    import torch

    torch.set_num_threads(1)
    while True:
        task = conn.recv()
        if task is None:
            return
        kind, payload = task
        if kind == "warm":
            # First calls pay imports and lazy initialisation: pay them before any timing.
            if payload != "batch":
                run_one(payload, chain(6, 30, 0), 0.1)
            conn.send("warm")
        elif kind == "solve":
            method, path, alpha = payload
            conn.send(run_one(method, np.load(path), alpha))
        elif kind == "batch":
            conn.send(batch_comparison(*payload))


_STARTUP_S = 300.0  # a worker's imports and warm-up on a loaded machine


class Pool:
    """One persistent worker per method; a call past its budget kills that worker. A new
    worker is started and warmed up (imports, first calls) before its first timed call, so
    every call gets exactly its budget."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.workers: dict[str, tuple[Any, Any]] = {}

    def call(self, key: str, task: tuple, budget: float) -> dict[str, Any] | None:
        if key not in self.workers:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            parent.send(("warm", key))
            if not parent.poll(_STARTUP_S):
                proc.kill()
                raise RuntimeError(f"the {key} worker did not start within {_STARTUP_S:.0f} s")
            parent.recv()
            self.workers[key] = (proc, parent)
        proc, conn = self.workers[key]
        conn.send(task)
        if conn.poll(budget):
            try:
                return conn.recv()
            except EOFError:
                pass
        proc.kill()
        proc.join()
        del self.workers[key]
        return None

    def close(self) -> None:
        for proc, conn in self.workers.values():
            with contextlib.suppress(Exception):
                conn.send(None)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


# ----------------------------------------------------------------------------- batches
def batch_comparison(B: int, p: int) -> dict[str, Any]:
    """One batched graphopt call on B problems vs B single graphopt calls vs B scikit-learn
    calls (enet_tol=1e-8), each S a different sparse_spd draw, α at the 90 % quantile."""
    from graphopt.solvers import glasso_objective, graphical_lasso
    from graphopt.solvers.reference import graphical_lasso_sklearn

    Ss = np.stack([sparse_spd(p, 2 * p, 0.95, 1000 + b) for b in range(B)])
    alphas = np.array([alpha_grid(S, (0.9,))[0] for S in Ss])
    graphical_lasso(Ss[:2], alphas[:2], warn=False)
    graphical_lasso_sklearn(Ss[0], float(alphas[0]), enet_tol=1e-8)
    out: dict[str, Any] = {"B": B, "p": p}
    t0 = time.perf_counter()
    batched = graphical_lasso(Ss, alphas, tol=GRAPHOPT_TOL, warn=False)
    out["graphopt_batched_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = [graphical_lasso(Ss[b], float(alphas[b]), tol=GRAPHOPT_TOL, warn=False)
               for b in range(B)]
    out["graphopt_single_calls_s"] = time.perf_counter() - t0
    sk, sk_ok = [], 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(B):
            try:
                r = graphical_lasso_sklearn(Ss[b], float(alphas[b]), enet_tol=1e-8)
                sk.append(float(glasso_objective(Ss[b], r.precision, alphas[b])))
                sk_ok += bool(r.converged)
            except FloatingPointError:
                sk.append(np.inf)
    out["sklearn_calls_s"] = time.perf_counter() - t0
    ours = np.asarray(batched.objective, dtype=np.float64)
    out["graphopt_converged"] = int(np.sum(batched.converged))
    out["sklearn_converged"] = sk_ok
    out["max_rel_diff_batched_vs_single"] = float(max(
        abs(ours[b] - singles[b].objective) / max(abs(singles[b].objective), 1.0)
        for b in range(B)))
    out["max_rel_gap_sklearn_minus_graphopt"] = float(np.max(
        (np.asarray(sk) - ours) / np.maximum(np.abs(ours), 1.0)))
    return out


# ----------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    budget = args.timeout or (15.0 if quick else 60.0)
    wanted = METHODS if not args.methods else [m.strip() for m in args.methods.split(",")]
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    chosen = [c for c in cases(quick) if not args.case or re.search(args.case, c.name)]
    if not chosen:
        raise SystemExit(f"--case {args.case!r} matches none of "
                         f"{', '.join(c.name for c in cases(quick))}")
    pool = Pool()
    tmp = Path(tempfile.mkdtemp(prefix="graphopt-bench-"))
    records: list[dict[str, Any]] = []
    too_slow: dict[tuple[str, str], int] = {}   # (family, method) -> smallest p that timed out
    started = time.perf_counter()
    try:
        for case in sorted(chosen, key=lambda c: c.name):
            try:
                S = case.build()
            except Exception as exc:  # noqa: BLE001 - e.g. the model package is missing
                print(f"{case.name}: skipped, data unavailable ({type(exc).__name__}: {exc})")
                continue
            case.p = S.shape[0]
            if case.fixed_alphas is not None:
                case.alphas = list(case.fixed_alphas)
                levels = [None] * len(case.alphas)
            else:
                case.alphas = alpha_grid(S, case.quantiles)
                levels = list(case.quantiles)
            path = tmp / f"{case.name}.npy"
            np.save(path, S)
            for q, alpha in zip(levels, case.alphas):
                row: dict[str, Any] = {"case": case.name, "family": case.family, "p": case.p,
                                       "quantile": q, "alpha": alpha, "note": case.note,
                                       "runs": {}}
                for method in wanted:
                    if not _applicable(method, case, quick):
                        continue
                    limit = too_slow.get((case.family, method))
                    # Only strictly larger problems are skipped: the other α of the same case
                    # (sparser solutions) are often much easier than the one that timed out.
                    if limit is not None and case.p > limit:
                        row["runs"][method] = {"status": "skipped (timed out on a smaller p)"}
                        continue
                    res = pool.call(method, ("solve", (method, str(path), alpha)), budget)
                    if res is None:
                        res = {"status": "timeout", "seconds": budget}
                        too_slow[(case.family, method)] = min(
                            case.p, too_slow.get((case.family, method), case.p))
                    row["runs"][method] = res
                _score(row)
                records.append(row)
                _print_row(row)
        batch = None
        if not args.no_batch and (not args.case and not args.methods):
            B, p = (16, 30) if quick else (64, 100)
            batch = pool.call("batch", ("batch", (B, p)), budget * 20)
            print(f"batch {B} x p={p}: {batch}")
    finally:
        pool.close()
    return {"quick": quick, "budget_s": budget, "solved_gap": SOLVED_GAP,
            "graphopt_tol": GRAPHOPT_TOL, "elapsed_s": time.perf_counter() - started,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_avg": _load()},
            "threads_per_solver": 1, "records": records, "batch": batch,
            "summary": summarise(records)}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _score(row: dict[str, Any]) -> None:
    """Gap to the best objective of any converged run; solved = converged and gap ≤ 1e-6."""
    finite = [r["objective"] for r in row["runs"].values()
              if r.get("status") == "converged" and r.get("objective") is not None]
    best = min(finite) if finite else None
    row["best_objective"] = best
    for r in row["runs"].values():
        if best is None or r.get("objective") is None:
            r["gap_to_best"] = None
            r["solved"] = False
            continue
        r["gap_to_best"] = (r["objective"] - best) / max(abs(best), 1.0)
        r["solved"] = r["status"] == "converged" and r["gap_to_best"] <= SOLVED_GAP


def _peer_time(row: dict[str, Any], peer: str) -> float | None:
    """A peer's seconds on a row: for scikit-learn the fastest of its settings that solved."""
    names = ["sklearn-default", "sklearn-enet"] if peer == "sklearn" else [peer]
    times = [row["runs"][m]["seconds"] for m in names
             if m in row["runs"] and row["runs"][m].get("solved")]
    return min(times) if times else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per peer: median and worst (smallest) ratio peer seconds / graphopt-admm seconds over
    rows both solved; and per method the counts of solved / unsolved / timeout / failure."""
    out: dict[str, Any] = {"ratios": {}, "counts": {}}
    for peer in PEERS:
        ratios, only_us, only_peer, neither = [], 0, 0, 0
        for row in records:
            ours = row["runs"].get(DEFAULT, {})
            names = ["sklearn-default", "sklearn-enet"] if peer == "sklearn" else [peer]
            if not any(m in row["runs"] for m in names) or not ours:
                continue
            t_peer = _peer_time(row, peer)
            if ours.get("solved") and t_peer is not None:
                ratios.append(t_peer / max(ours["seconds"], 1e-9))
            elif ours.get("solved"):
                only_us += 1
            elif t_peer is not None:
                only_peer += 1
            else:
                neither += 1
        out["ratios"][peer] = {
            "rows_both_solved": len(ratios),
            "median": float(np.median(ratios)) if ratios else None,
            "worst": float(np.min(ratios)) if ratios else None,
            "best": float(np.max(ratios)) if ratios else None,
            "only_graphopt_solved": only_us, "only_peer_solved": only_peer,
            "neither_solved": neither}
    for method in METHODS:
        runs = [row["runs"][method] for row in records if method in row["runs"]]
        if not runs:
            continue
        out["counts"][method] = {
            "runs": len(runs),
            "solved": sum(bool(r.get("solved")) for r in runs),
            "converged_but_inaccurate": sum(r.get("status") == "converged"
                                            and not r.get("solved") for r in runs),
            "not_converged": sum(r.get("status") == "not converged" for r in runs),
            "timeout": sum(r.get("status") == "timeout" for r in runs),
            "failed": sum(str(r.get("status", "")).startswith(("failed", "error")) for r in runs),
            "skipped": sum(str(r.get("status", "")).startswith("skipped") for r in runs)}
    return out


# ----------------------------------------------------------------------------- output
SHORT = {"graphopt-auto": "auto (default)", "graphopt-admm": "ADMM", "graphopt-bcd": "BCD", "graphopt-quic": "QUIC",
         "graphopt-admm-noscreen":
         "ADMM no-screen", "sklearn-default": "sk default", "sklearn-enet": "sk enet_tol=1e-8",
         "gglasso": "gglasso", "cvxpy": "cvxpy"}


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    status = r.get("status", "")
    if status == "timeout":
        return "timeout"
    if status.startswith("skipped"):
        return "skipped"
    if status.startswith(("failed", "error")):
        return "Non SPD" if "Non SPD" in status else "error"
    text = f"{r['seconds']:.3g}s/{r.get('n_iter', '?')}it"
    if r.get("solved"):
        return text
    gap = r.get("gap_to_best")
    mark = "unconv." if status != "converged" else "inacc."
    return f"{text} {mark}" + (f" {gap:.0e}" if gap is not None else "")


def table_lines(result: dict[str, Any]) -> list[str]:
    """The Markdown table: one row per (case, α), a cell per method, then the summary."""
    methods = [m for m in METHODS if any(m in r["runs"] for r in result["records"])]
    head = ["case", "p", "α (quantile)", "nnz", "blocks"] + [SHORT[m] for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["records"]:
        ours = row["runs"].get(DEFAULT, {})
        bs = ours.get("block_sizes") or {}
        blocks_txt = f"{bs['blocks']} (max {bs['largest']})" if bs else "–"
        nnz = ours.get("nnz_fraction")
        level = row["quantile"] if row["quantile"] is not None else "fixed"
        cells = [row["case"], str(row["p"]), f"{row['alpha']:.3g} ({level})",
                 f"{nnz:.1%}" if nnz is not None else "–", blocks_txt]
        cells += [_cell(row["runs"].get(m)) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| peer | rows both solved | median ratio | worst ratio | best ratio | "
                 "only graphopt solved | only peer solved | neither |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for peer, s in result["summary"]["ratios"].items():
        fmt = (lambda v: "–" if v is None else f"{v:.2f}×")
        lines.append(f"| {peer} | {s['rows_both_solved']} | {fmt(s['median'])} | "
                     f"{fmt(s['worst'])} | {fmt(s['best'])} | {s['only_graphopt_solved']} | "
                     f"{s['only_peer_solved']} | {s['neither_solved']} |")
    lines.append("")
    lines.append("| method | runs | solved | converged, inaccurate | not converged | timeout | "
                 "failed | skipped |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for m, c in result["summary"]["counts"].items():
        lines.append(f"| {SHORT[m]} | {c['runs']} | {c['solved']} | "
                     f"{c['converged_but_inaccurate']} | {c['not_converged']} | {c['timeout']} | "
                     f"{c['failed']} | {c['skipped']} |")
    b = result.get("batch")
    if b:
        lines.append("")
        lines.append(
            f"Batch of {b['B']} problems at p = {b['p']}: one batched graphopt call "
            f"{b['graphopt_batched_s']:.2f} s, {b['B']} single graphopt calls "
            f"{b['graphopt_single_calls_s']:.2f} s, {b['B']} scikit-learn calls (enet_tol=1e-8) "
            f"{b['sklearn_calls_s']:.2f} s; converged {b['graphopt_converged']}/{b['B']} "
            f"(graphopt) and {b['sklearn_converged']}/{b['B']} (scikit-learn); batched vs "
            f"single objectives differ by ≤ {b['max_rel_diff_batched_vs_single']:.1e} relative.")
    m = result["machine"]
    lines.append("")
    lines.append(f"Run: {'--quick' if result['quick'] else 'full'}, {result['elapsed_s']:.0f} s, "
                 f"budget {result['budget_s']:.0f} s per call, 1 thread per solver, "
                 f"{m['cpus']} CPUs, load average at the end {m['load_avg']}.")
    for extra in result.get("merged_runs", []):
        lines.append(f"Rows of {', '.join(extra['cases'])} rerun with `--merge` "
                     f"({extra['elapsed_s']:.0f} s, load average {extra['load_avg']}).")
    return lines


def _print_row(row: dict[str, Any]) -> None:
    cells = "  ".join(f"{SHORT[m]}={_cell(r)}" for m, r in row["runs"].items())
    print(f"{row['case']:<28} p={row['p']:<5} α={row['alpha']:.3g}  {cells}", flush=True)


def render(doc: Path, result: dict[str, Any]) -> None:
    """Write the table between the marker comments of ``doc`` (atomically)."""
    text = doc.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise SystemExit(f"{doc}: no {MARK_START} ... {MARK_END} markers to write between")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    body = "\n".join(table_lines(result))
    tmp = doc.with_suffix(doc.suffix + ".tmp")
    tmp.write_text(f"{head}{MARK_START}\n{body}\n{MARK_END}{tail}")
    tmp.replace(doc)


def merge(full: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """The full results with the rows of a partial run replacing theirs (same case and α):
    the partial run's methods replace those methods' runs, the others are kept; every row
    touched is rescored and the summary recomputed."""
    key = (lambda r: (r["case"], round(r["alpha"], 12)))
    new = {key(r): r for r in part["records"]}
    records = []
    for row in full["records"]:
        if key(row) in new:
            fresh = new.pop(key(row))
            row = dict(row, runs={**row["runs"], **fresh["runs"]})
            _score(row)
        records.append(row)
    records.extend(new.values())
    merged = dict(full, records=records, summary=summarise(records))
    merged["merged_runs"] = full.get("merged_runs", []) + [
        {"cases": sorted({r["case"] for r in part["records"]}), "elapsed_s": part["elapsed_s"],
         "load_avg": part["machine"]["load_avg"]}]
    return merged


def _write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:7]))
    parser.add_argument("--quick", action="store_true", help="smoke run: p <= 100 (< 2 min)")
    parser.add_argument("--case", help="regular expression: run only the cases it matches")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--timeout", type=float, help="seconds per call (default 60; quick 15)")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch comparison")
    parser.add_argument("--merge", action="store_true",
                        help="with --case/--methods: replace those cases' rows (and methods) in "
                             "the full JSON instead of writing solvers_partial.json")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/"
                                                 "solvers.json; quick: solvers_quick.json)")
    parser.add_argument("--render", type=Path, metavar="DOC",
                        help="write the table from the JSON (--out) into DOC between markers, "
                             "without running anything")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("solvers_quick.json" if args.quick else "solvers.json")
    if args.render:
        render(args.render, json.loads(out.read_text()))
        print(f"wrote the table from {out} into {args.render}")
        return 0
    partial = bool(args.case or args.methods)
    if partial and not args.merge:
        # A partial run must not overwrite the full results the docs are rendered from.
        out = args.out or RESULTS / "solvers_partial.json"
    result = run(args)
    if partial and args.merge and out.exists():
        result = merge(json.loads(out.read_text()), result)
    _write_json(out, result)
    print("\n".join(table_lines(result)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # the guard matters: workers are spawned processes
    sys.exit(main())
