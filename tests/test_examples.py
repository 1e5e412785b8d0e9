"""The tutorial scripts of ``examples/`` run at their CI sizes (``--small``) and succeed.

Each script checks its own result (against cvxpy, an exact filter, a loop of single solves,
the expected allocation) and exits non-zero when a check fails; here it runs as a subprocess
with one CPU thread, and its exit code and a key line of its output are checked.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_CVXPY = importlib.util.find_spec("cvxpy") is not None
needs_hf = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")

CASES = [
    pytest.param("solve_and_verify.py", "OK: graphopt agrees with cvxpy",
                 marks=pytest.mark.skipif(not HAS_CVXPY, reason="cvxpy not installed")),
    pytest.param("batched_gpu.py", "OK: batched results match the loop of single solves"),
    pytest.param("filter_signals.py", "OK: chebyshev matches exact and the filter smooths"),
    pytest.param("trainer_finetune.py", "OK: Trainer fine-tuning with GGM allocation finished",
                 marks=needs_hf),
    pytest.param("cli_finetune.py", "OK: CLI fine-tuning finished", marks=needs_hf),
    pytest.param("torchrun_ddp.py", "OK: torchrun fine-tuning finished", marks=needs_hf),
]


@pytest.mark.parametrize("script,key_line", CASES)
def test_example_runs(script: str, key_line: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--small"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert key_line in proc.stdout, proc.stdout[-3000:]


def test_every_example_is_tested_and_documented() -> None:
    """A new example must be added to CASES; each has a module docstring and --small."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    assert scripts == sorted(c.values[0] for c in CASES)
    for name in scripts:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "--small" in text, name
