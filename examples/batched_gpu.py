"""Batched graphical lasso on a GPU (with a CPU fallback).

:func:`graphopt.solvers.graphical_lasso` accepts a batch of covariances, shape (B, p, p), and
one α per problem, shape (B,). The ADMM solver then runs all B problems together (one batched
eigendecomposition per iteration) on the tensors' device, and every certificate
(``objective``, ``dual_gap``, ``relative_gap``, ``kkt_violation``, ``n_iter``, ``converged``)
comes back with shape (B,), the dual points ``dual_covariance`` with shape (B, p, p).

This script builds B random covariances as a torch tensor on ``cuda`` when available (it says
so and falls back to the CPU otherwise), solves them in one batched call and in a Python loop
of single solves, checks that both give the same precision matrices and objectives, and times
both.

Run: ``python examples/batched_gpu.py`` (``--small`` for the CI size).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from graphopt.solvers import graphical_lasso


def random_covariances(B: int, p: int, n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """B empirical covariances of n standard-normal draws each, (B, p, p) float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, n, p, generator=g, dtype=torch.float64)
    X = X - X.mean(dim=1, keepdim=True)
    return (X.transpose(1, 2) @ X / (n - 1)).to(device)


def sync(device: torch.device) -> None:
    """CUDA kernels are asynchronous: wait for them before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CI size (B = 8, p = 10)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--p", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    B = args.batch or (8 if args.small else 64)
    p = args.p or (10 if args.small else 50)
    if args.device is not None:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
        print("CUDA not available: CPU fallback")
    print(f"device: {device}, batch B={B}, p={p}")

    S = random_covariances(B, p, n=3 * p, device=device)
    alpha = torch.linspace(0.05, 0.3, B, dtype=torch.float64, device=device)  # one α per problem
    graphical_lasso(S[:1], alpha[:1])  # warm-up (CUDA context, kernels) outside the timings

    sync(device)
    t0 = time.perf_counter()
    batched = graphical_lasso(S, alpha)
    sync(device)
    t_batch = time.perf_counter() - t0

    t0 = time.perf_counter()
    singles = [graphical_lasso(S[b], float(alpha[b])) for b in range(B)]
    sync(device)
    t_loop = time.perf_counter() - t0

    # Both run to the same relative duality-gap tolerance: the solutions agree to ~sqrt(tol).
    loop_prec = torch.stack([r.precision for r in singles])
    loop_obj = torch.stack([torch.as_tensor(r.objective, dtype=torch.float64) for r in singles])
    prec_err = float((batched.precision - loop_prec).norm(dim=(1, 2)).max()
                     / loop_prec.norm(dim=(1, 2)).min())
    obj_err = float(((batched.objective.cpu() - loop_obj.cpu()).abs()
                     / loop_obj.cpu().abs().clamp_min(1.0)).max())
    print(f"batched: {t_batch * 1e3:8.1f} ms  (iterations per problem: "
          f"{batched.n_iter.min().item()}-{batched.n_iter.max().item()})")
    print(f"loop:    {t_loop * 1e3:8.1f} ms  ({B} single solves)")
    # The certificate: f(Θ) − (log det W̃ + p), W̃ = dual_covariance a feasible dual point,
    # bounds the distance to the optimum; relative_gap divides it by max(|f|, 1).
    rel_gap = float(batched.relative_gap.max())
    print(f"speed-up {t_loop / t_batch:.1f}x; max relative precision difference {prec_err:.1e}, "
          f"objective difference {obj_err:.1e}; max certified relative gap {rel_gap:.1e}")
    ok = (bool(batched.converged.all()) and prec_err < 1e-3 and obj_err < 1e-6
          and rel_gap <= 1e-6)
    if not ok:
        print("FAIL: batched and single solves disagree", file=sys.stderr)
        return 1
    print("OK: batched results match the loop of single solves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
