#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): one command, one JSON file + a Markdown summary.
#   bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]      (or: --dry-run OUT_DIR)
# On the GPU machine graphopt is not installed: this tree is put on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="" ; flags=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) flags+=("--dry-run") ;;
    -h|--help) exec python3 "$root/benchmarks/gpu_check.py" --help ;;
    -*) flags+=("$arg") ;;
    *) if [[ -z "$out" ]]; then out="$arg"; else flags+=("$arg"); fi ;;
  esac
done
if [[ -z "$out" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]" >&2
  exit 2
fi
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || python=python
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/benchmarks/gpu_check.py" "$out" "${flags[@]}"
