"""Training-step cost of GGM vs LoRA vs full fine-tuning (see graphopt/bench/peft.py)."""
import os
import sys

# Run as `python benchmarks/peft.py`, this folder is sys.path[0], and this file would shadow
# Hugging Face's `peft` (which transformers imports): drop the folder from the path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from graphopt.bench.peft import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
