"""Benchmark: spectral filters on k-NN graphs, exact vs Chebyshev vs CG.

For each n: n points uniform in the unit cube (3-D), a Gaussian k-NN graph (k = 10, sparse),
its combinatorial Laplacian, and d = 64 random signals. Then

- ``exact``: dense eigendecomposition + ``U h(Λ) Uᵀ X`` (time includes ``eigh``; the cached
  apply, what a :class:`SpectralFilter` costs per step afterwards, is reported separately),
- ``chebyshev`` (orders 20 and 40) for the heat and Tikhonov responses,
- ``solve``: Jacobi-preconditioned CG for the Tikhonov response,

with the relative error ``‖Y − Y_ref‖_F / ‖Y_ref‖_F`` against exact where n ≤ ``--exact-max``
and against a degree-100 Chebyshev expansion above it (its own error at n ≤ exact-max is in
the table). A last case builds a 100,000-node graph chunk-wise and filters it.

Memory: the rise of the process's peak resident set size over its resident size just before
the step (Linux: ``/proc/self/clear_refs`` resets the peak, ``VmHWM`` reads it; freed heap is
returned with ``malloc_trim`` first so the baseline is honest). Elsewhere: ``ru_maxrss``
deltas, which only show new high-water marks. On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from _common import RESULTS_DIR
from graphopt.graph import knn_graph, laplacian
from graphopt.responses import heat, tikhonov
from graphopt.spectral import SpectralFilter

__all__ = ["main", "run"]

DEFAULT_OUTPUT = RESULTS_DIR / "spectral.json"


# -- measurement --------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Context manager: ``.mib`` = peak memory added by the block (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> PeakMemory:
        _release_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._proc = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self._base = _status_kib("VmRSS")
            self._proc = self._base is not None
        except OSError:
            pass
        if not self._proc:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._proc:
            self.mib = max(0, (_status_kib("VmHWM") or 0) - self._base) / 1024
        else:
            self.mib = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._base) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _best(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    return min(_timed(fn, device)[0] for _ in range(max(1, repeat)))


def _rel(Y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((Y - ref).norm() / ref.norm().clamp_min(1e-300))


# -- one graph ----------------------------------------------------------------------------
def _bench_graph(
    n: int,
    *,
    args: argparse.Namespace,
    device: torch.device,
    algorithm: str,
    exact: bool,
    gen: torch.Generator,
) -> list[dict[str, Any]]:
    dtype = torch.float64
    P = torch.rand(n, 3, generator=gen, dtype=dtype).to(device)
    X = torch.randn(n, args.dim, generator=gen, dtype=dtype).to(device)
    rows: list[dict[str, Any]] = []

    def row(**kw: Any) -> None:
        base = {"n": n, "d": args.dim, "k": args.k, "nnz": nnz}
        base.update(kw)
        rows.append(base)
        _print_row(base)

    nnz = 0
    with PeakMemory(device) as mem:
        t_build, W = _timed(
            lambda: knn_graph(P, args.k, sparse=True, algorithm=algorithm), device
        )
    L = laplacian(W)
    nnz = int(L._nnz())
    row(method="build", response="-", order=None, setup_s=t_build, apply_s=None,
        total_s=t_build, rel_err=None, ref=None, peak_mib=mem.mib, note=f"knn {algorithm}")
    resp = {str(heat(t)): heat(t) for t in args.t}
    resp[str(tikhonov(args.a))] = tikhonov(args.a)
    first_heat = str(heat(args.t[0]))
    tik = str(tikhonov(args.a))

    refs: dict[str, torch.Tensor] = {}
    exact_total: float | None = None
    if exact:
        with PeakMemory(device) as mem:
            t_setup, f = _timed(lambda: SpectralFilter(L, resp[first_heat], method="exact"), device)
            t_first, Y = _timed(lambda: f(X), device)
        t_apply = _best(lambda: f(X), device, args.repeat)
        exact_total = t_setup + t_first
        U, lam = f.eigenvectors, f.eigenvalues
        for name, r in resp.items():  # same eigenpairs, other responses: untimed references
            refs[name] = Y if name == first_heat else U @ (r(lam)[:, None] * (U.T @ X))
        row(method="exact", response=first_heat, order=None, setup_s=t_setup,
            apply_s=t_apply, total_s=exact_total, rel_err=0.0, ref="exact", peak_mib=mem.mib,
            note="eigh + apply; apply_s = cached U h(Λ) Uᵀ X")
        ref_name = "exact"
    else:
        for name, r in resp.items():
            refs[name] = SpectralFilter(L, r, method="chebyshev", order=args.ref_order)(X)
        ref_name = f"cheb-{args.ref_order}"
        row(method="exact", response=first_heat, order=None, setup_s=None, apply_s=None,
            total_s=None, rel_err=None, ref=None, peak_mib=None,
            note=f"skipped: dense eigh of {n}x{n} ({n * n * 8 / 2**30:.1f} GiB per matrix)")

    for name in resp:
        for order in args.orders:
            with PeakMemory(device) as mem:
                t_setup, f = _timed(
                    lambda: SpectralFilter(L, resp[name], method="chebyshev", order=order), device
                )
                t_first, Y = _timed(lambda: f(X), device)
            t_apply = _best(lambda: f(X), device, args.repeat)
            total = t_setup + t_first
            row(method="chebyshev", response=str(resp[name]), order=order, setup_s=t_setup,
                apply_s=t_apply, total_s=total, rel_err=_rel(Y, refs[name]), ref=ref_name,
                peak_mib=mem.mib, speedup=(exact_total / total if exact_total else None),
                note=f"lmax={f.lmax:.3g}")
        if exact:
            # The Chebyshev reference used above n > exact-max, checked where exact exists.
            g = SpectralFilter(L, resp[name], method="chebyshev", order=args.ref_order)
            rows[-1]["ref_order_err"] = _rel(g(X), refs[name])
    with PeakMemory(device) as mem:
        t_setup, f = _timed(lambda: SpectralFilter(L, resp[tik], method="solve"), device)
        t_first, Y = _timed(lambda: f(X), device)
    t_apply = _best(lambda: f(X), device, args.repeat)
    total = t_setup + t_first
    info = f.info
    row(method="solve", response=tik, order=None, setup_s=t_setup,
        apply_s=t_apply, total_s=total, rel_err=_rel(Y, refs[tik]), ref=ref_name,
        peak_mib=mem.mib, speedup=(exact_total / total if exact_total else None),
        note=f"CG {info.iterations} it, resid {info.residual:.1e}" if info else "")
    return rows


# -- output -------------------------------------------------------------------------------
_HEADER = (
    f"{'n':>7} {'nnz':>8} {'method':>9} {'response':>12} {'K':>3} {'total s':>9} "
    f"{'apply s':>9} {'speedup':>8} {'rel err':>9} {'vs':>8} {'peak MiB':>9}  note"
)


def _fmt(v: Any, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


def _print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['n']:>7} {r['nnz']:>8} {r['method']:>9} {r['response']:>12} "
        f"{_fmt(r.get('order'), 'd', 3)} {_fmt(r.get('total_s'), '.4f', 9)} "
        f"{_fmt(r.get('apply_s'), '.4f', 9)} {_fmt(r.get('speedup'), '.1f', 8)} "
        f"{_fmt(r.get('rel_err'), '.1e', 9)} {r.get('ref') or '-':>8} "
        f"{_fmt(r.get('peak_mib'), '.1f', 9)}  {r.get('note', '')}",
        flush=True,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every case described by ``args``; return the JSON-ready result."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    print(_HEADER)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows += _bench_graph(n, args=args, device=device, algorithm="auto",
                             exact=n <= args.exact_max, gen=gen)
    if args.large:
        rows += _bench_large(args.large, args=args, device=device, gen=gen)
    return {
        "benchmark": "spectral",
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "device": str(device),
        },
        "memory_measure": "peak RSS rise over the step (VmHWM after clear_refs) or CUDA peak",
        "rows": rows,
    }


def _bench_large(
    n: int, *, args: argparse.Namespace, device: torch.device, gen: torch.Generator
) -> list[dict[str, Any]]:
    """The O(nnz) case: chunked brute-force k-NN build, Chebyshev heat, CG Tikhonov."""
    dtype = torch.float64
    P = torch.rand(n, 3, generator=gen, dtype=dtype).to(device)
    X = torch.randn(n, args.dim, generator=gen, dtype=dtype).to(device)
    rows: list[dict[str, Any]] = []
    with PeakMemory(device) as mem:
        t_build, W = _timed(
            lambda: knn_graph(P, args.k, sparse=True, algorithm=args.large_algorithm), device
        )
    L = laplacian(W)
    nnz = int(L._nnz())
    dense_gib = n * n * 8 / 2**30
    base = {"n": n, "d": args.dim, "k": args.k, "nnz": nnz}
    rows.append({**base, "method": "build", "response": "-", "order": None, "setup_s": t_build,
                 "apply_s": None, "total_s": t_build, "rel_err": None, "ref": None,
                 "peak_mib": mem.mib, "note": f"knn {args.large_algorithm}, chunked"})
    _print_row(rows[-1])
    ref = SpectralFilter(L, heat(args.t[0]), method="chebyshev", order=args.ref_order)(X)
    for order in args.orders:
        with PeakMemory(device) as mem:
            t_setup, f = _timed(
                lambda: SpectralFilter(L, heat(args.t[0]), method="chebyshev", order=order), device
            )
            t_first, Y = _timed(lambda: f(X), device)
        rows.append({**base, "method": "chebyshev", "response": str(heat(args.t[0])), "order": order,
                     "setup_s": t_setup, "apply_s": t_first, "total_s": t_setup + t_first,
                     "rel_err": _rel(Y, ref), "ref": f"cheb-{args.ref_order}",
                     "peak_mib": mem.mib,
                     "note": f"dense L would need {dense_gib:.0f} GiB; "
                             f"signals {n * args.dim * 8 / 2**20:.0f} MiB"})
        _print_row(rows[-1])
    with PeakMemory(device) as mem:
        f = SpectralFilter(L, tikhonov(args.a), method="solve")
        t_first, Y = _timed(lambda: f(X), device)
    rows.append({**base, "method": "solve", "response": str(tikhonov(args.a)), "order": None,
                 "setup_s": 0.0, "apply_s": t_first, "total_s": t_first, "rel_err": None,
                 "ref": None, "peak_mib": mem.mib,
                 "note": f"CG {f.info.iterations} it, resid {f.info.residual:.1e}" if f.info else ""})
    _print_row(rows[-1])
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/spectral.py", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    p.add_argument("--dim", type=int, default=64, help="signals per node (columns of X)")
    p.add_argument("--k", type=int, default=10, help="neighbours per node")
    p.add_argument("--orders", type=int, nargs="+", default=[20, 40])
    p.add_argument("--t", type=float, nargs="+", default=[1.0, 5.0],
                   help="heat response exp(-t λ), one or more times (the first is the headline)")
    p.add_argument("--a", type=float, default=1.0, help="Tikhonov response 1/(1 + a λ)")
    p.add_argument("--exact-max", type=int, default=4096, help="largest n for dense eigh")
    p.add_argument("--ref-order", type=int, default=100, help="Chebyshev reference above it")
    p.add_argument("--large", type=int, default=100_000, help="O(nnz) case size (0: skip)")
    p.add_argument("--large-algorithm", default="brute", choices=["brute", "kdtree", "auto"])
    p.add_argument("--repeat", type=int, default=3, help="best-of for cached apply times")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: comparable timings, no oversubscription "
                        "on a shared CPU; 0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small sizes, < 30 s")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/spectral.py [--quick] [--output PATH] ...``: print the table, write JSON."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.sizes, args.exact_max, args.large, args.repeat = [256, 1024], 1024, 10_000, 1
    for name in ("dim", "k", "exact_max", "ref_order", "repeat"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    result = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
