"""Training-step cost of GGM vs LoRA vs full fine-tuning (see graphopt/bench/peft.py)."""
from graphopt.bench.peft import main

raise SystemExit(main())
