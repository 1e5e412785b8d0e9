"""The prepared GPU check: CUDA tests, batched graphical lasso speed, a CUDA fine-tune, and a
count of device→host copies in the hot loops — one command, one JSON file, one summary.

    python benchmarks/gpu_check.py OUT_DIR [--dry-run] [--payload DIR]
    (or: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run])

Steps (each with its own time budget; a failing step is recorded and the others still run):

1. ``cuda_tests``: ``pytest -m cuda`` on tests/test_cuda_*.py (every torch path on CUDA in
   float32 and float64, on the same problems as on CPU); pass/fail/skip counts.
2. ``glasso_batch``: ``graphical_lasso`` on B ∈ {1, 64, 512} × p ∈ {100, 400, 1000}, float32
   and float64, on the device against the same solver on the CPU (one thread) and against
   scikit-learn (one thread). Seconds (``torch.cuda.synchronize`` before reading the clock,
   the first call at each (p, dtype) untimed), iterations, certified gaps, peak CUDA memory.
   CPU and scikit-learn cases that would not fit the budget are skipped, never extrapolated.
3. ``finetune``: ``graphopt finetune --device cuda --steps-per-epoch 0`` (full epochs) for
   ggm and LoRA on the default model and BBC News carried as a payload (see
   benchmarks/gpu_payload.py): wall time, peak CUDA memory, step times, test accuracy; and
   the step time of ggm against LoRA on a randomly initialised BERT-base-sized model.
4. ``round_trips``: ``torch.profiler`` and a dispatch-level counter over one solver call and
   one training step: device→host copies per iteration, the largest, and where they happen.

``--dry-run`` runs every step at toy sizes on whatever device there is (CI: a CPU) and says
which parts it skipped for lack of CUDA. Exit status 1 if any step errored (a part skipped
for lack of CUDA, cvxpy or the payload is not an error); 2 for a non-dry run without CUDA.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the GPU machine has no installed graphopt: use this tree's
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# ------------------------------------------------------------------ every knob in one place

#: Seconds per step on a GPU (total < 8 min) and in the dry run (total < 2 min on 2 cores).
BUDGET_S = {"cuda_tests": 120, "glasso_batch": 150, "finetune": 150, "round_trips": 30}
DRY_BUDGET_S = {"cuda_tests": 40, "glasso_batch": 25, "finetune": 60, "round_trips": 20}
TOTAL_BUDGET_S = 470
DRY_TOTAL_BUDGET_S = 110

GLASSO_SIZES = {"B": (1, 64, 512), "p": (100, 400, 1000)}
DRY_GLASSO_SIZES = {"B": (1, 4), "p": (8, 16)}
#: Stopping tolerance per dtype: float32 iterates cannot certify much below ~1e-5 relative.
GLASSO_TOL = {"float32": 1e-5, "float64": 1e-6}
GLASSO_MAX_ITER = 500
#: The CPU / scikit-learn comparison runs a case only if it is expected to take at most this.
CPU_CASE_CAP_S = 25.0
DRY_CPU_CASE_CAP_S = 2.0
#: scikit-learn problems timed per case at most (the total is B × the measured mean).
SKLEARN_MAX_PROBLEMS = 16

FINETUNE_TIMING = {"steps": 24, "warmup": 4, "scoring": 4, "rows": 400, "words": 100}
DRY_FINETUNE_TIMING = {"steps": 6, "warmup": 1, "scoring": 3, "rows": 60, "words": 10}
#: BERT-base (Devlin et al. 2019): 12 layers, hidden 768, 12 heads, 3072 intermediate.
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512}
DRY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "vocab_size": 200, "max_position_embeddings": 64}

PROFILE_SIZES = {"admm_p": 400, "bcd_p": 100, "l2g_p": 60, "iters": 20}
DRY_PROFILE_SIZES = {"admm_p": 30, "bcd_p": 12, "l2g_p": 12, "iters": 6}

DEFAULT_PAYLOAD = ROOT / "benchmarks" / "gpu_payload"
CUDA_TEST_FILES = ("tests/test_cuda_solvers.py", "tests/test_cuda_peft.py")


# ------------------------------------------------------------------ the step runner


@dataclass
class Context:
    out: Path
    dry: bool
    device: torch.device
    payload: Path
    deadline: float
    step_deadline: float = 0.0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return min(self.deadline, self.step_deadline) - time.perf_counter()


@dataclass
class StepRecord:
    status: str = "ok"                     # ok | error | skipped
    seconds: float = 0.0
    budget_s: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _load_sibling(name: str) -> Any:
    """A module of benchmarks/ (gpu_payload) or examples/ (_tiny) by path, not by sys.path."""
    for folder in (ROOT / "benchmarks", ROOT / "examples"):
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            return module
    raise FileNotFoundError(name)


# ------------------------------------------------------------------ step 1: CUDA tests


def step_cuda_tests(ctx: Context, rec: StepRecord) -> None:
    junit = ctx.out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", *CUDA_TEST_FILES,
           "-p", "no:cacheprovider", f"--junitxml={junit}"]
    rec.result["command"] = " ".join(cmd[1:])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=max(10.0, ctx.left()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pytest -m cuda did not finish within {ctx.left():.0f} s") from None
    rec.result["pytest_s"] = time.perf_counter() - t0
    rec.result["returncode"] = proc.returncode
    rec.result["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    if not junit.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr)[-500:]}")
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    rec.result["counts"] = counts
    rec.result["failed"] = [f"{case.get('classname')}::{case.get('name')}"
                            for case in suite.iter("testcase")
                            if case.find("failure") is not None or case.find("error") is not None]
    if counts["failures"] or counts["errors"] or proc.returncode not in (0, 5):
        raise RuntimeError(f"{counts['failures']} failed, {counts['errors']} errors in the "
                           f"CUDA tests: {rec.result['failed'][:10]}")
    if not ctx.cuda:
        rec.skip(f"{counts['skipped']} CUDA-marked tests (collected, not run)", "no CUDA")
        rec.status = "skipped"
    elif counts["passed"] == 0:
        raise RuntimeError("CUDA is available but no CUDA test ran")


# ------------------------------------------------------------------ step 2: batched glasso


def _covariances(B: int, p: int, dtype: torch.dtype, device: torch.device,
                 seed: int) -> tuple[torch.Tensor, float]:
    """B sample correlation matrices of n = 2p draws from one sparse precision
    (scikit-learn's make_sparse_spd_matrix, seeded), built on the device in chunks; and
    α = 2·sqrt(log p / n), the usual rate for the graphical lasso's penalty."""
    from sklearn.datasets import make_sparse_spd_matrix

    n = 2 * p
    prec = make_sparse_spd_matrix(p, alpha=0.95, random_state=seed)
    chol = np.linalg.cholesky(np.linalg.inv(prec))               # Σ = C Cᵀ
    C = torch.as_tensor(chol, dtype=torch.float64, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(B, p, p, dtype=dtype, device=device)
    chunk = max(1, min(B, int(2e8 // (n * p))))                  # ≤ 1.6 GB of draws at a time
    for start in range(0, B, chunk):
        b = min(chunk, B - start)
        Z = torch.randn(b, n, p, generator=gen, dtype=torch.float64, device=device)
        X = Z @ C.T
        X = X - X.mean(dim=1, keepdim=True)
        S = X.transpose(-1, -2) @ X / n
        d = S.diagonal(dim1=-2, dim2=-1).rsqrt()
        out[start:start + b] = (S * d.unsqueeze(-1) * d.unsqueeze(-2)).to(dtype)
    return out, 2.0 * math.sqrt(math.log(p) / n)


def _solve_timed(S: torch.Tensor, alpha: float, dtype_name: str) -> tuple[float, Any]:
    from graphopt.solvers import graphical_lasso

    _sync(S.device)
    t0 = time.perf_counter()
    res = graphical_lasso(S, alpha, tol=GLASSO_TOL[dtype_name], max_iter=GLASSO_MAX_ITER,
                          warn=False)
    _sync(S.device)
    return time.perf_counter() - t0, res


def _summarise_result(res: Any, batched: bool) -> dict[str, Any]:
    def vec(x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float64).numpy().reshape(-1)
        return np.asarray(x, dtype=np.float64).reshape(-1)

    objective = vec(res.objective)
    gap = vec(res.dual_gap)
    rel = gap / np.maximum(np.abs(objective), 1.0)
    out = {"n_iter_median": float(np.median(vec(res.n_iter))),
           "n_iter_max": int(vec(res.n_iter).max()),
           "converged": int(vec(res.converged).sum()), "problems": int(objective.size),
           "certified_gap_max": float(gap.max()), "certified_rel_gap_max": float(rel.max()),
           "dual_gap_max": float(vec(res.dual_gap).max())}
    # Newer results carry the dual point of the certificate; report that it is there.
    out["has_dual_covariance"] = getattr(res, "dual_covariance", None) is not None
    return out


def _sklearn_case(S: torch.Tensor, alpha: float, cap_s: float, deadline: float) -> dict[str, Any]:
    """scikit-learn's graphical_lasso (one BLAS thread) on problems of the batch, in order,
    while time remains; per-problem mean and the total B × mean (said to be computed so)."""
    from threadpoolctl import threadpool_limits

    from graphopt.solvers.reference import graphical_lasso_sklearn

    B = S.shape[0]
    S_np = S.detach().to("cpu", torch.float64).numpy()
    times, objectives, failures = [], [], 0
    start = time.perf_counter()
    with threadpool_limits(1):
        for b in range(min(B, SKLEARN_MAX_PROBLEMS)):
            if times and (time.perf_counter() - start + np.mean(times) > cap_s
                          or time.perf_counter() + np.mean(times) > deadline):
                break
            t0 = time.perf_counter()
            try:
                ref = graphical_lasso_sklearn(S_np[b], alpha)
                objectives.append(float(ref.objective))
            except FloatingPointError:
                failures += 1
            times.append(time.perf_counter() - t0)
    mean = float(np.mean(times))
    return {"problems_timed": len(times), "per_problem_mean_s": mean,
            "per_problem_max_s": float(np.max(times)), "failures": failures,
            "total_s": mean * B, "objectives": objectives,
            "total_is": "measured" if len(times) == B else
                        f"B x the mean of the first {len(times)} of {B} problems"}


def step_glasso_batch(ctx: Context, rec: StepRecord) -> None:
    sizes = DRY_GLASSO_SIZES if ctx.dry else GLASSO_SIZES
    cap = DRY_CPU_CASE_CAP_S if ctx.dry else CPU_CASE_CAP_S
    cpu = torch.device("cpu")
    threads_before = torch.get_num_threads()
    rec.result.update({"device": str(ctx.device), "tol": GLASSO_TOL, "max_iter": GLASSO_MAX_ITER,
                       "method": "admm", "warm_up": "one untimed call at each (p, dtype) with "
                       "B = 1 on the device before the timed calls",
                       "cpu_threads": 1, "cases": []})
    if not ctx.cuda:
        rec.skip("GPU timings (the 'device' column is the CPU)", "no CUDA")
    dev_per_problem: dict[tuple[int, str], float] = {}   # (p, dtype) -> s/problem on device
    cpu_per_problem: dict[tuple[int, str], float] = {}
    sk_per_problem: dict[int, float] = {}
    for p in sizes["p"]:
        for dtype in (torch.float32, torch.float64):
            dn = str(dtype).removeprefix("torch.")
            warmed = False
            for B in sizes["B"]:
                case: dict[str, Any] = {"B": B, "p": p, "dtype": dn}
                rec.result["cases"].append(case)
                est = _estimate(dev_per_problem, p, dn, B)
                if est is not None and est > ctx.left():
                    case["device"] = {"skipped": f"budget: about {est:.0f} s expected, "
                                                 f"{ctx.left():.0f} s left"}
                    rec.skip(f"device B={B} p={p} {dn}", "time budget")
                    continue
                S, alpha = _covariances(B, p, dtype, ctx.device, seed=1000 * p + B)
                case["alpha"] = alpha
                torch.set_num_threads(threads_before)
                if not warmed:
                    _solve_timed(S[:1], alpha, dn)
                    warmed = True
                if ctx.cuda:
                    torch.cuda.reset_peak_memory_stats(ctx.device)
                seconds, res = _solve_timed(S, alpha, dn)
                case["device"] = {"seconds": seconds, **_summarise_result(res, True)}
                if ctx.cuda:
                    case["device"]["peak_cuda_mib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
                dev_per_problem[(p, dn)] = seconds / B
                # The same solver on the CPU, one thread, when it fits.
                torch.set_num_threads(1)
                est = _estimate(cpu_per_problem, p, dn, B)
                if est is not None and (est > cap or est > ctx.left()):
                    case["cpu"] = {"skipped": f"about {est:.0f} s expected > cap {cap:.0f} s "
                                              f"or budget ({ctx.left():.0f} s left)"}
                else:
                    S_cpu = S.to(cpu)
                    seconds_cpu, res_cpu = _solve_timed(S_cpu, alpha, dn)
                    case["cpu"] = {"seconds": seconds_cpu, **_summarise_result(res_cpu, True)}
                    cpu_per_problem[(p, dn)] = seconds_cpu / B
                    case["speedup_vs_cpu"] = seconds_cpu / seconds
                torch.set_num_threads(threads_before)
                # scikit-learn (float64 by construction) on the same problems.
                est_sk = _estimate({(k, "x"): v for k, v in sk_per_problem.items()}, p, "x", 1)
                if est_sk is not None and (est_sk > cap or est_sk > ctx.left()):
                    case["sklearn"] = {"skipped": f"one problem expected to take about "
                                                  f"{est_sk:.0f} s > cap or budget"}
                else:
                    sk = _sklearn_case(S, alpha, cap, time.perf_counter() + ctx.left())
                    sk_per_problem[p] = sk["per_problem_mean_s"]
                    ours = np.asarray(res.objective.detach().cpu().double()).reshape(-1)
                    refs = np.asarray(sk.pop("objectives"))
                    if refs.size:
                        k = refs.size
                        sk["objective_ours_minus_sklearn_rel_max"] = float(
                            np.max((ours[:k] - refs) / np.maximum(np.abs(refs), 1.0)))
                    case["sklearn"] = sk
                    case["speedup_vs_sklearn"] = sk["total_s"] / seconds
                del S, res
                if ctx.cuda:
                    torch.cuda.empty_cache()
    if any(c.get("cpu", {}).get("skipped") for c in rec.result["cases"]):
        rec.skip("CPU timing of the cases marked so", "over the per-case cap / budget "
                 "(not extrapolated)")
    if any(c.get("sklearn", {}).get("skipped") for c in rec.result["cases"]):
        rec.skip("scikit-learn timing of the cases marked so", "over the per-case cap / budget")
    rec.result["targets"] = _glasso_targets(rec.result["cases"], sizes, ctx)


def _estimate(per_problem: dict[tuple[int, str], float], p: int, dn: str,
              B: int) -> float | None:
    """Expected seconds for B problems of size p, for deciding whether to run a case only:
    from the same p (× B), else from the largest smaller p (× B (p/p')³, one eigh per
    iteration). Never reported as a measurement."""
    if (p, dn) in per_problem:
        return per_problem[(p, dn)] * B
    smaller = [q for (q, d) in per_problem if d == dn and q < p]
    if not smaller:
        return None
    q = max(smaller)
    return per_problem[(q, dn)] * B * (p / q) ** 3


def _glasso_targets(cases: list[dict[str, Any]], sizes: dict[str, tuple[int, ...]],
                    ctx: Context) -> list[dict[str, Any]]:
    def find(B: int, p: int, dn: str) -> dict[str, Any] | None:
        return next((c for c in cases if (c["B"], c["p"], c["dtype"]) == (B, p, dn)), None)

    B_small = 64 if 64 in sizes["B"] else max(sizes["B"])
    p_small, p_large = min(sizes["p"]), max(sizes["p"])
    targets = []
    for dn in ("float32", "float64"):
        c = find(B_small, p_small, dn)
        value = c.get("speedup_vs_sklearn") if c else None
        targets.append({"target": f"B={B_small} x p={p_small} {dn}: >= 50x faster than "
                                  f"{B_small} scikit-learn calls", "value": value,
                        "met": None if value is None or not ctx.cuda else value >= 50})
    c = find(1, p_large, "float32")
    value = c.get("speedup_vs_cpu") if c else None
    targets.append({"target": f"p={p_large} float32 (B=1): >= 20x faster than the same solver "
                              "on CPU (one thread)", "value": value,
                    "met": None if value is None or not ctx.cuda else value >= 20})
    return targets


# ------------------------------------------------------------------ step 3: fine-tune


def _finetune_cli(ctx: Context, model: Path, data: Path, out: Path, method: str,
                  extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "graphopt.cli", "finetune", "--model", str(model),
           "--data", str(data), "--output-dir", str(out), "--method", method,
           "--device", str(ctx.device), "--no-progress", *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=max(10.0, ctx.left()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"graphopt finetune --method {method} did not finish within the "
                           f"step's budget") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not (out / "metrics.json").is_file():
        raise RuntimeError(f"graphopt finetune --method {method} failed (exit "
                           f"{proc.returncode}): {proc.stderr[-1500:]}")
    m = json.loads((out / "metrics.json").read_text())
    t = m["timings"]
    phases = {ph: {"steps": v["steps"], "median_step_s": v["median_s"]}
              for ph, v in t.get("per_phase", {}).items()}
    steps = np.asarray(t["step_times_s"], dtype=float)
    return {"command": " ".join(cmd[3:]), "process_wall_s": wall, "total_s": t["total_s"],
            "train_s": t["train_s"], "steps": t["steps"],
            "median_step_s": float(np.median(steps)) if steps.size else None,
            "per_phase": phases, "allocator_s": t.get("allocator_s"),
            "selection_s": t.get("selection_s"),
            "peak_cuda_mib": m["peak_memory"]["cuda_max_allocated_mib"],
            "peak_rss_mib": m["peak_memory"]["peak_rss_mib"],
            "test": m["test"], "epochs": len(m["epochs"]),
            "validation_accuracy": [e["validation"]["accuracy"] for e in m["epochs"]],
            "trainable_parameters": m["trainable_parameters"],
            "allocation_solver": (m.get("allocation") or {}).get("solver")}


def _random_bert_dir(root: Path, config: dict[str, int], rows: int, words: int,
                     seed: int = 0) -> tuple[Path, Path]:
    """A randomly initialised BERT of the given size with a WordPiece tokenizer over a
    synthetic vocabulary, and a 3-class CSV of random words (timing only: nothing to learn
    beyond chance, so its accuracy is not reported)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + [f"w{i}" for i in range(config["vocab_size"] - len(special))]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    tokenizer.save_pretrained(model_dir)
    torch.manual_seed(seed)
    transformers.BertModel(transformers.BertConfig(**config)).save_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    lines = ["text,label"]
    for i in range(rows):
        lines.append(" ".join(vocab[j] for j in rng.integers(len(special), len(vocab), words))
                     + f",c{i % 3}")
    data = root / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    return model_dir, data


def step_finetune(ctx: Context, rec: StepRecord) -> None:
    payload_mod = _load_sibling("gpu_payload")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-ft-"))
    has_lora = importlib.util.find_spec("peft") is not None
    methods = ["ggm", "lora"] if has_lora else ["ggm"]
    if not has_lora:
        rec.skip("LoRA runs", "no Hugging Face peft")
    try:
        # (a) Accuracy: the default model (carried in float16, upcast here) on BBC News, full
        # epochs. Dry run: the tiny test model through the same float16 round trip.
        if ctx.dry:
            tiny = _load_sibling("_tiny")
            model_src, data = tiny.build_tiny(work / "tiny")
            half = work / "half"
            payload_mod.write_half_precision_checkpoint(model_src, half)
            extra = ["--steps-per-epoch", "2", "--epochs", "2", "--batch-size", "8",
                     "--max-length", "16", "--threads", "1"]
            ggm_extra = ["--rank", "3", "--n-important", "2", "--n-select", "5",
                         "--warmup-steps", "1", "--scoring-steps", "2"]
            rec.skip("accuracy on the default model and BBC News (toy model instead)",
                     "dry run" if ctx.cuda else "no CUDA")
        elif not (ctx.payload / "model").is_dir() or not (ctx.payload / "bbc_news.csv").is_file():
            half, data = None, None
            rec.skip(f"accuracy on the default model and BBC News ({ctx.payload} absent)",
                     "no payload")
        else:
            half, data = ctx.payload / "model", ctx.payload / "bbc_news.csv"
            extra, ggm_extra = ["--steps-per-epoch", "0"], []
        if half is not None:
            model_dir = payload_mod.upcast_checkpoint(half, work / "model_fp32")
            runs = {}
            for method in methods:
                runs[method] = _finetune_cli(ctx, model_dir, data, work / f"acc-{method}",
                                             method, extra + (ggm_extra if method == "ggm" else []))
            rec.result["accuracy"] = {"model": "all-MiniLM-L6-v2 (float16 payload, upcast to "
                                               "float32)" if not ctx.dry else "tiny BERT (dry run)",
                                      "runs": runs}
        # (b) Step time of ggm against LoRA on a BERT-base-sized model with random weights.
        sizes = DRY_FINETUNE_TIMING if ctx.dry else FINETUNE_TIMING
        config = DRY_BERT if ctx.dry else BERT_BASE
        if ctx.left() < 30 and not ctx.dry:
            rec.skip("BERT-base step timing", "time budget")
            return
        model_dir, data = _random_bert_dir(work / "bert", config, sizes["rows"], sizes["words"])
        n_layers = config["num_hidden_layers"]
        extra = ["--steps-per-epoch", str(sizes["steps"]), "--epochs", "1",
                 "--max-length", "128", "--batch-size", "16"]
        if ctx.dry:
            extra += ["--threads", "1", "--max-length", "16", "--batch-size", "8"]
        ggm_extra = ["--warmup-steps", str(sizes["warmup"]), "--scoring-steps",
                     str(sizes["scoring"]), "--rank", "3" if ctx.dry else "10",
                     "--n-important", "2" if ctx.dry else "30",
                     "--n-select", "5" if ctx.dry else "60"]
        timing = {}
        for method in methods:
            timing[method] = _finetune_cli(ctx, model_dir, data, work / f"time-{method}", method,
                                           extra + (ggm_extra if method == "ggm" else []))
            timing[method].pop("test", None)
            timing[method].pop("validation_accuracy", None)
        result = {"config": config, "layers": n_layers, "runs": timing,
                  "note": "random weights: step times only, accuracy meaningless"}
        if "lora" in timing:
            ggm_ph = timing["ggm"]["per_phase"]
            lora_step = timing["lora"]["median_step_s"]
            for ph in ("warmup", "scoring", "trained"):
                if ph in ggm_ph and lora_step:
                    result[f"ggm_{ph}_over_lora_step"] = ggm_ph[ph]["median_step_s"] / lora_step
        rec.result["timing"] = result
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ step 4: round trips


class _HostReads:
    """Counts, at the dispatcher, every op that reads device data on the host: scalar reads
    (``.item()``, ``bool()``, ``float()`` → ``_local_scalar_dense``), device→host copies
    (``.cpu()``, ``.to("cpu")``, ``.numpy()`` via ``_to_copy`` / ``copy_``) and ``nonzero``
    (its output size is read back); each with its bytes and the graphopt line that asked."""

    def __init__(self, device_only: bool) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        # On a GPU only reads of device memory count; on a CPU (dry run) every scalar read
        # stands in for the device→host read it would be there.
        self.device_only = device_only

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                outer._inspect(func._schema.name, args, out)
                return out

        self.mode = Mode()
        self.events: list[dict[str, Any]] = []

    def _inspect(self, name: str, args: tuple, out: Any) -> None:
        kind, src = None, None
        if name == "aten::_local_scalar_dense":
            if not (self.device_only and args[0].device.type == "cpu"):
                kind, src = "scalar read", args[0]
        elif name == "aten::_to_copy" and isinstance(out, torch.Tensor):
            if args[0].device.type != "cpu" and out.device.type == "cpu":
                kind, src = "copy to host", args[0]
        elif name == "aten::copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
            if args[1].device.type != "cpu" and args[0].device.type == "cpu":
                kind, src = "copy to host", args[1]
        elif name == "aten::nonzero" and args[0].device.type != "cpu":
            kind, src = "nonzero (size read back)", args[0]
        if kind is None:
            return
        self.events.append({"kind": kind, "bytes": src.numel() * src.element_size(),
                            "numel": src.numel(), "device": src.device.type,
                            "site": _call_site()})

    def __enter__(self) -> "_HostReads":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _call_site() -> str:
    """The innermost graphopt/ line on the stack (where the read was asked for); failing
    that, the innermost line outside torch's dispatch machinery and this file."""
    pkg = str(ROOT / "graphopt")
    frames = traceback.extract_stack()[:-3]
    for frame in reversed(frames):
        if frame.filename.startswith(pkg):
            return f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno}"
    for frame in reversed(frames):
        f = frame.filename.replace(os.sep, "/")
        if not any(x in f for x in ("/torch/utils/", "/torch/_dynamo/", "/torch/_ops", "/torch/_compile")) \
                and not f.endswith("gpu_check.py"):
            short = f.split("site-packages/")[-1]
            return f"{short}:{frame.lineno} (outside graphopt)"
    return "outside graphopt"


def _profile(fn: Callable[[], Any], device: torch.device) -> dict[str, int]:
    """torch.profiler event counts that mean a device→host read (CUDA memcpy DtoH kernels,
    cudaMemcpy calls, synchronising scalar reads)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    counts: dict[str, int] = {}
    for evt in prof.key_averages():
        key = evt.key
        if ("Memcpy DtoH" in key or key in ("aten::_local_scalar_dense", "aten::item")
                or key.startswith("cudaMemcpy") or key == "cudaStreamSynchronize"):
            counts[key] = counts.get(key, 0) + int(evt.count)
    return counts


def _count_reads(fn: Callable[[], Any], device: torch.device, device_only: bool
                 ) -> list[dict[str, Any]]:
    with _HostReads(device_only) as reads:
        fn()
        _sync(device)
    return reads.events


def _by_site(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    sites: dict[str, dict[str, Any]] = {}
    for e in events:
        s = sites.setdefault(e["site"], {"site": e["site"], "kind": e["kind"], "count": 0,
                                          "max_bytes": 0, "max_numel": 0})
        s["count"] += 1
        s["max_bytes"] = max(s["max_bytes"], e["bytes"])
        s["max_numel"] = max(s["max_numel"], e["numel"])
    return sites


def _probe(name: str, make: Callable[[int], Callable[[], Any]], n1: int, n2: int,
           matrix_numel: int, ctx: Context) -> dict[str, Any]:
    """Host reads of a call run for n1 and for n2 iterations: the difference divided by
    n2 − n1 is exactly what one more iteration costs (set-up and the final certificates
    cancel). n1 = 0 means one call per iteration (a training step)."""
    device, device_only = ctx.device, ctx.cuda
    runs = {}
    for n in {n1, n2} - {0}:
        fn = make(n)
        fn()  # warm-up: first-call allocations and library handles are not the hot loop
        _sync(device)
        runs[n] = (_count_reads(fn, device, device_only), _profile(fn, device))
    ev2, prof2 = runs[n2]
    ev1, prof1 = runs[n1] if n1 else ([], {})
    s1, s2 = _by_site(ev1), _by_site(ev2)
    per_iter = []
    for site, s in s2.items():
        extra = s["count"] - s1.get(site, {}).get("count", 0)
        if extra > 0:
            per_iter.append({**s, "count": extra, "per_iteration": extra / (n2 - n1),
                             "matrix_sized": s["max_numel"] >= matrix_numel})
    per_iter.sort(key=lambda s: -s["count"])
    outside = [{**s, "matrix_sized": s["max_numel"] >= matrix_numel} for site, s in s2.items()
               if s["count"] - s1.get(site, {}).get("count", 0) <= 0]
    total = sum(s["count"] for s in per_iter)
    return {"probe": name, "iterations_compared": [n1, n2],
            "host_reads_per_iteration": total / (n2 - n1),
            "largest_bytes_per_iteration": max((s["max_bytes"] for s in per_iter), default=0),
            "matrix_sized_reads": [s["site"] for s in per_iter + outside if s["matrix_sized"]],
            "sites": per_iter, "sites_outside_the_loop": outside,
            "profiler_counts_per_iteration": {
                k: (v - prof1.get(k, 0)) / (n2 - n1) for k, v in prof2.items()}}


def step_round_trips(ctx: Context, rec: StepRecord) -> None:
    import warnings

    from graphopt.exceptions import ConvergenceWarning, RegularizationWarning
    from graphopt.solvers import graphical_lasso, l2g_ggm

    sizes = DRY_PROFILE_SIZES if ctx.dry else PROFILE_SIZES
    dev, iters = ctx.device, sizes["iters"]
    rec.result["method"] = (
        "dispatch-level counter of _local_scalar_dense / device->host _to_copy, copy_ / "
        "nonzero, by graphopt call site; plus torch.profiler event counts"
        + ("" if ctx.cuda else " (no CUDA: scalar reads on CPU stand in for device->host "
                               "copies; profiler memcpy counts need a GPU)"))
    if not ctx.cuda:
        rec.skip("CUDA memcpy DtoH counts from the profiler", "no CUDA")
    probes = []
    n1, n2 = sizes["iters"], 2 * sizes["iters"]
    S_admm, a_admm = _covariances(1, sizes["admm_p"], torch.float32, dev, seed=7)
    S_bcd, a_bcd = _covariances(1, sizes["bcd_p"], torch.float64, dev, seed=8)
    p = sizes["l2g_p"]
    S_l2g, _ = _covariances(1, p, torch.float64, dev, seed=9)
    important = torch.arange(0, p, 5, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RegularizationWarning)
        # tol far below reach: every one of the max_iter iterations runs.
        probes.append(_probe(
            f"graphical_lasso admm p={sizes['admm_p']} float32",
            lambda n: lambda: graphical_lasso(S_admm[0], a_admm, tol=1e-14, max_iter=n,
                                              warn=False),
            n1, n2, sizes["admm_p"] ** 2, ctx))
        probes.append(_probe(
            f"graphical_lasso bcd p={sizes['bcd_p']} float64 (per sweep)",
            lambda n: lambda: graphical_lasso(S_bcd[0], 0.3 * a_bcd, method="bcd", tol=1e-14,
                                              max_iter=n, warn=False),
            2, 3, sizes["bcd_p"] ** 2, ctx))
        probes.append(_probe(
            f"l2g_ggm reduced p={p} float64",
            lambda n: lambda: l2g_ggm(S_l2g[0], important, tau=0.5, lam=10.0, g=0.9,
                                      tol=1e-14, max_iter=n),
            n1, n2, p * p, ctx))
        probes.append(_training_step_probe(ctx))
    rec.result["probes"] = probes
    rec.result["matrix_sized_reads"] = {p["probe"]: p["matrix_sized_reads"] for p in probes
                                        if p["matrix_sized_reads"]}


def _training_step_probe(ctx: Context) -> dict[str, Any]:
    """One optimiser step of a PC-adapted BERT in the scoring phase (forward, backward,
    AdamW step, allocator scoring) — what every step of ``graphopt finetune --method ggm``
    does before the selection."""
    import transformers

    from graphopt.peft.allocator import GGMAllocator
    from graphopt.peft.config import GGMConfig
    from graphopt.peft.model import get_graphopt_model

    cfg = DRY_BERT if ctx.dry else {**BERT_BASE, "num_hidden_layers": 4}
    torch.manual_seed(0)
    base = transformers.BertForSequenceClassification(
        transformers.BertConfig(**cfg, num_labels=3)).to(ctx.device)
    model = get_graphopt_model(base, GGMConfig(rank=3 if ctx.dry else 10))
    allocator = GGMAllocator(model, GGMConfig(rank=3 if ctx.dry else 10, n_important=2,
                                              n_select=5, warmup_steps=0, scoring_steps=10**6))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg["vocab_size"], (16, 32 if ctx.dry else 128), generator=gen)
    batch = {"input_ids": ids.to(ctx.device),
             "labels": torch.randint(0, 3, (16,), generator=gen).to(ctx.device)}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()
        allocator.step()

    hidden = cfg["hidden_size"]
    return _probe(f"training step (PC adapter, scoring phase) hidden={hidden} "
                  f"layers={cfg['num_hidden_layers']}", lambda n: step, 0, 1,
                  hidden * hidden, ctx)


# ------------------------------------------------------------------ driver and reports

STEPS: list[tuple[str, str, Callable[[Context, StepRecord], None]]] = [
    ("cuda_tests", "CUDA-marked tests (pytest -m cuda)", step_cuda_tests),
    ("glasso_batch", "batched graphical lasso: device vs CPU vs scikit-learn", step_glasso_batch),
    ("finetune", "graphopt finetune on CUDA: ggm vs LoRA", step_finetune),
    ("round_trips", "device->host reads in hot loops (torch.profiler)", step_round_trips),
]


def _machine(device: torch.device) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": props.total_memory / 2**30,
                     "cuda": torch.version.cuda})
    for mod in ("transformers", "peft", "sklearn", "cvxpy"):
        spec = importlib.util.find_spec(mod)
        info[mod] = None if spec is None else getattr(__import__(mod), "__version__", "present")
    return info


def run(out: Path, dry: bool, payload: Path, only: list[str] | None = None) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budgets = DRY_BUDGET_S if dry else BUDGET_S
    t_start = time.perf_counter()
    ctx = Context(out=out, dry=dry, device=device, payload=payload,
                  deadline=t_start + (DRY_TOTAL_BUDGET_S if dry else TOTAL_BUDGET_S))
    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry, "device": str(device), "machine": _machine(device), "steps": {}}
    if importlib.util.find_spec("cvxpy") is None:
        report["note_cvxpy"] = "no cvxpy here: the checks use NumPy / scikit-learn references"
    for key, title, fn in STEPS:
        if only and key not in only:
            continue
        rec = StepRecord(budget_s=budgets[key])
        ctx.step_deadline = time.perf_counter() + budgets[key]
        t0 = time.perf_counter()
        print(f"[gpu_check] {key}: {title} (budget {budgets[key]} s)", file=sys.stderr, flush=True)
        try:
            if ctx.left() <= 1:
                rec.status = "skipped"
                rec.skip(key, "time budget (the whole check)")
            else:
                fn(ctx, rec)
        except Exception as exc:  # one failing step never loses the others' results
            rec.status = "error"
            rec.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
        rec.seconds = time.perf_counter() - t0
        report["steps"][key] = {"title": title, **rec.__dict__}
        print(f"[gpu_check] {key}: {rec.status} in {rec.seconds:.1f} s", file=sys.stderr, flush=True)
        _write(out, report)  # after every step: a later crash keeps what was measured
    report["total_s"] = time.perf_counter() - t_start
    _write(out, report)
    return report


def _write(out: Path, report: dict[str, Any]) -> None:
    from graphopt.peft.report import to_jsonable, write_json_atomic, write_text_atomic

    write_json_atomic(out / "gpu_check.json", to_jsonable(report))
    write_text_atomic(out / "gpu_check.md", summary(report))


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def summary(report: dict[str, Any]) -> str:
    """The Markdown summary: what ran, what was skipped and why, the key figures."""
    m = report["machine"]
    where = m.get("gpu") or f"CPU only ({m.get('cpu_count')} cores)"
    lines = [f"# GPU check {'(dry run) ' if report['dry_run'] else ''}— {report['date']}", "",
             f"Device: {report['device']} — {where}; torch {m['torch']}, Python {m['python']}.",
             ""]
    if report["dry_run"]:
        lines += ["Dry run: every step at toy sizes; no figure below is a GPU measurement.", ""]
    lines += ["| step | status | seconds (budget) | skipped (why) |", "|---|---|---|---|"]
    for key, s in report["steps"].items():
        skipped = "; ".join(f"{k['what']} ({k['why']})" for k in s["skipped"]) or "–"
        lines.append(f"| {key} | {s['status']} | {s['seconds']:.1f} ({s['budget_s']}) | {skipped} |")
    steps = report["steps"]
    for key, s in steps.items():
        if s["error"]:
            lines += ["", f"**{key} error:** `{s['error'].splitlines()[0]}`"]
    t = steps.get("cuda_tests", {}).get("result", {}).get("counts")
    if t:
        lines += ["", "## CUDA tests", "",
                  f"{t['tests']} collected: {t['passed']} passed, {t['failures']} failed, "
                  f"{t['errors']} errors, {t['skipped']} skipped."]
    g = steps.get("glasso_batch", {}).get("result", {})
    if g.get("cases"):
        lines += ["", "## Batched graphical lasso (ADMM)", "",
                  f"Device {g['device']}; tol {g['tol']}; CPU and scikit-learn at one thread. "
                  "Seconds per batch; gap = largest certified relative gap.", "",
                  "| B | p | dtype | device s | iters (med/max) | gap | peak MiB | CPU s | "
                  "× CPU | sklearn s | × sklearn |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in g["cases"]:
            d, cpu, sk = c.get("device", {}), c.get("cpu", {}), c.get("sklearn", {})
            lines.append(
                f"| {c['B']} | {c['p']} | {c['dtype']} | {_fmt(d.get('seconds')) if 'seconds' in d else 'skipped'} | "
                f"{_fmt(d.get('n_iter_median'))}/{_fmt(d.get('n_iter_max'))} | "
                f"{_fmt(d.get('certified_rel_gap_max'), 2)} | {_fmt(d.get('peak_cuda_mib'), 4)} | "
                f"{_fmt(cpu.get('seconds')) if 'seconds' in cpu else 'skipped'} | "
                f"{_fmt(c.get('speedup_vs_cpu'))} | "
                f"{_fmt(sk.get('total_s')) if 'total_s' in sk else 'skipped'}"
                f"{'' if sk.get('total_is', 'measured') == 'measured' else '*'} | "
                f"{_fmt(c.get('speedup_vs_sklearn'))} |")
        lines += ["", "\\* B × the measured mean of the first problems (count in the JSON).", ""]
        for tg in g.get("targets", []):
            met = {True: "met", False: "NOT met", None: "not measured"}[tg["met"]]
            lines.append(f"- {tg['target']}: {_fmt(tg['value'])} — {met}")
    f = steps.get("finetune", {}).get("result", {})
    if f.get("accuracy") or f.get("timing"):
        lines += ["", "## Fine-tune", "", "| run | steps | total s | median step s | "
                  "peak CUDA MiB | test accuracy |", "|---|---|---|---|---|---|"]
        for part in ("accuracy", "timing"):
            for method, r in (f.get(part) or {}).get("runs", {}).items():
                acc = r.get("test", {}).get("accuracy") if part == "accuracy" else None
                lines.append(f"| {part} {method} | {r['steps']} | {_fmt(r['total_s'])} | "
                             f"{_fmt(r['median_step_s'])} | {_fmt(r['peak_cuda_mib'], 4)} | "
                             f"{_fmt(acc, 4)} |")
        tm = f.get("timing", {})
        ratios = {k: v for k, v in tm.items() if k.endswith("_over_lora_step")}
        if ratios:
            lines += ["", "ggm / LoRA median step time: " + ", ".join(
                f"{k.removeprefix('ggm_').removesuffix('_over_lora_step')} {v:.2f}"
                for k, v in ratios.items())]
    r = steps.get("round_trips", {}).get("result", {})
    if r.get("probes"):
        lines += ["", "## Device→host reads per iteration", "", r["method"] + ".", "",
                  "| probe | reads / iteration | largest bytes | matrix-sized reads | "
                  "top sites (reads / iteration) |", "|---|---|---|---|---|"]
        for pr in r["probes"]:
            top = ", ".join(f"{s['site']} ({s['per_iteration']:.2g})"
                            for s in pr["sites"][:4]) or "–"
            lines.append(f"| {pr['probe']} | {pr['host_reads_per_iteration']:.2f} | "
                         f"{pr['largest_bytes_per_iteration']} | {', '.join(pr['matrix_sized_reads']) or 'none'} | "
                         f"{top} |")
    lines += ["", f"Total {report.get('total_s', 0):.0f} s. Full data: gpu_check.json.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step at toy sizes, on whatever device there is")
    parser.add_argument("--payload", type=Path, default=DEFAULT_PAYLOAD,
                        help="folder written by benchmarks/gpu_payload.py")
    parser.add_argument("--only", action="append", choices=[k for k, _, _ in STEPS],
                        help="run only this step (repeatable)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; run with --dry-run on a CPU machine",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args.out, args.dry_run, args.payload, args.only)
    print(summary(report))
    errors = [k for k, s in report["steps"].items() if s["status"] == "error"]
    if errors:
        print(f"gpu_check: steps with errors: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
