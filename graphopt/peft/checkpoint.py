"""Checkpoints of a training run: write one atomically, resume from the last complete one.

A checkpoint of optimiser step N is the directory ``<checkpoints>/step-<N>/`` holding

- ``state.pt``: the trained tensors (every parameter the optimiser updates, by name), the
  optimiser and scheduler states, each training hook's ``state_dict()`` (the GGM
  allocator's phase, EMAs and score samples, spectral coordination's buffers), the loop's
  own state (position in the data order, what it has recorded so far) and every RNG state:
  torch (CPU and each CUDA device), NumPy's global generator, Python's ``random`` and any
  named generator the loop passes (its data order). Under torch.distributed the RNG and
  hook states of every rank are gathered, so each rank resumes with its own;
- ``checkpoint.json``: format, step, the run's fingerprint (the config, model and data it
  was made with) and the SHA-256 of ``state.pt``.

Crash safety: the directory is written under a temporary name (``.step-<N>.<random>.tmp``),
each file flushed to disk, ``checkpoint.json`` last, and only then renamed to
``step-<N>`` (a rename is atomic). A crash at any point leaves either no ``step-<N>`` at
all or a complete one, and :func:`find_checkpoint` only considers complete directories
(the marker parses and names a ``state.pt`` of the recorded size); the temporary leftovers
of a crashed save are removed by the next save. :func:`load_checkpoint` checks the SHA-256,
the fingerprint, the tensor names and shapes before it changes anything.

The functions work in any loop (``model``, ``optimizer``, ``hooks``, generators)::

    for step, batch in enumerate(loader, start=1):
        ...; optimizer.step(); ...
        if step % 100 == 0:
            save_checkpoint(run_dir / "checkpoints", step=step, model=model,
                            optimizer=optimizer, hooks=hooks)
    # after a crash:
    ckpt = load_checkpoint(run_dir, model=model, optimizer=optimizer, hooks=hooks)
    start = ckpt.step + 1

:func:`graphopt.peft.train.train_model` (and so ``graphopt finetune --save-every N``,
``--resume RUN_DIR``) uses them; see docs/finetune.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphopt._atomic import _fsync_dir

from .config import CHECKPOINTS_KEPT
from .hooks import TrainingHook

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "DEFAULT_KEEP", "Checkpoint",
           "save_checkpoint", "load_checkpoint", "find_checkpoint", "fingerprint_tensors",
           "fingerprint_data", "rng_state", "set_rng_state"]

CHECKPOINT_FORMAT = "graphopt-checkpoint"
CHECKPOINT_VERSION = 1
#: Complete checkpoints kept per run (the older ones are deleted after each save).
DEFAULT_KEEP = CHECKPOINTS_KEPT
STATE_FILE = "state.pt"
MARKER_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its directory, step and the loop state it carried."""

    path: Path
    step: int
    loop: dict[str, Any]
    fingerprint: dict[str, Any]


# -- fingerprints ----------------------------------------------------------------------------
def fingerprint_tensors(named: Mapping[str, torch.Tensor] | nn.Module) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of tensors (a module's ``state_dict``)."""
    if isinstance(named, nn.Module):
        named = named.state_dict()
    h = hashlib.sha256()
    for name in sorted(named):
        t = named[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.cpu().contiguous().view(torch.uint8).reshape(-1).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def fingerprint_data(*parts: Any) -> str:
    """SHA-256 of JSON-serialisable data (e.g. the texts and labels of each split)."""
    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"cannot fingerprint a {type(o).__name__}")

    return hashlib.sha256(json.dumps(parts, default=default, sort_keys=True).encode()).hexdigest()


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}{key}"
            if key not in saved:
                out.append(f"{name}: absent in the checkpoint, {current[key]!r} now")
            elif key not in current:
                out.append(f"{name}: {saved[key]!r} in the checkpoint, absent now")
            else:
                out.extend(_differences(saved[key], current[key], name + "."))
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')}: {saved!r} in the checkpoint, {current!r} now"]
    return []


def _check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path,
                       may_differ: Collection[str] = ()) -> None:
    if may_differ:  # those config options are the caller's to check
        saved, current = ({**fp, "config": {k: v for k, v in fp.get("config", {}).items()
                                            if k not in may_differ}} for fp in (saved, current))
    problems = []
    for part in sorted(set(saved) | set(current)):
        diffs = _differences(saved.get(part), current.get(part), "")
        if diffs:
            problems.append(f"a different {part} ({'; '.join(diffs)})")
    if problems:
        raise ValueError(f"cannot resume from {path}: it was made with " + ", and with ".join(problems))


# -- RNG states ------------------------------------------------------------------------------
def rng_state(generators: Mapping[str, np.random.Generator | torch.Generator] | None = None
              ) -> dict[str, Any]:
    """Every RNG state of this process: torch (CPU, each initialised CUDA device), NumPy's
    global generator, Python's ``random`` and the named ``generators``."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": (torch.cuda.get_rng_state_all()
                 if torch.cuda.is_available() and torch.cuda.is_initialized() else []),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                        "pos": int(np_state["state"]["pos"])}},
        "python": random.getstate(),
        "generators": {},
    }
    for name, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            state["generators"][name] = {"torch": g.get_state()}
        elif isinstance(g, np.random.Generator):
            state["generators"][name] = {"numpy": g.bit_generator.state}
        else:
            raise TypeError(f"generators[{name!r}] must be a numpy or torch Generator, "
                            f"got {type(g).__name__}")
    return state


def set_rng_state(state: Mapping[str, Any],
                  generators: Mapping[str, np.random.Generator | torch.Generator] | None = None
                  ) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where the devices exist)."""
    for name in generators or {}:
        if name not in state["generators"]:
            raise ValueError(f"the checkpoint holds no state of the generator {name!r}")
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() >= len(state["cuda"]):
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    for name, g in (generators or {}).items():
        saved = state["generators"][name]
        if isinstance(g, torch.Generator):
            g.set_state(saved["torch"])
        else:
            g.bit_generator.state = saved["numpy"]


# -- packing: what torch.load(weights_only=True) can read back -------------------------------
def _pack(obj: Any) -> Any:
    """Hook states may hold NumPy arrays and scalars; store arrays as tagged tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(obj, copy=True))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_pack(v) for v in obj)
    if isinstance(obj, list):
        return [_pack(v) for v in obj]
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_unpack(v) for v in obj)
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    return obj


# -- what a checkpoint holds -----------------------------------------------------------------
def _trained_parameters(model: nn.Module, optimizer: torch.optim.Optimizer | None
                        ) -> dict[str, nn.Parameter]:
    """The parameters the optimiser updates (frozen-later nodes included: they trained
    before a selection froze them), by name; without an optimiser, the trainable ones."""
    named = dict(model.named_parameters())
    if optimizer is None:
        return {n: p for n, p in named.items() if p.requires_grad}
    ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
    out = {n: p for n, p in named.items() if id(p) in ids}
    if len(out) != len(ids):
        raise ValueError("the optimiser updates parameters that are not the model's "
                         "(pass the unwrapped model the optimiser was built over)")
    return out


def _hook_states(hooks: Sequence[TrainingHook]) -> dict[str, Any]:
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ValueError(f"hook names must be unique, got {names}")
    return {h.name: _pack(h.state_dict()) for h in hooks}


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike[str], *, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    hooks: Sequence[TrainingHook] = (),
                    generators: Mapping[str, np.random.Generator | torch.Generator] | None = None,
                    loop: Mapping[str, Any] | None = None,
                    fingerprint: Mapping[str, Any] | None = None,
                    keep: int = DEFAULT_KEEP) -> Path | None:
    """Write ``directory/step-<step>/`` atomically (see the module doc); keep the last ``keep``.

    ``model`` is the unwrapped module the optimiser was built over; ``loop`` is the loop's
    own JSON-like state, handed back by :func:`load_checkpoint`; ``fingerprint`` (config,
    model, data, ...) is what a resume must match. Under torch.distributed every rank must
    call it (the ranks' RNG and hook states are gathered); rank 0 writes and returns the
    path, the others return None once it is written.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    rank, world = _distributed()
    mine = {"rng": rng_state(generators), "hooks": _hook_states(hooks)}
    if world > 1:
        per_rank: list[Any] = [None] * world
        torch.distributed.all_gather_object(per_rank, mine)
    else:
        per_rank = [mine]
    path = None
    if rank == 0:
        state = {
            "step": step,
            "model": {n: p.detach().cpu() for n, p in _trained_parameters(model, optimizer).items()},
            "optimizer": None if optimizer is None else _pack(optimizer.state_dict()),
            "scheduler": None if scheduler is None else _pack(scheduler.state_dict()),
            "ranks": per_rank,
            "loop": _pack(dict(loop or {})),
        }
        path = _write(Path(directory), step, state, dict(fingerprint or {}), world)
        _prune(Path(directory), keep)
    if world > 1:
        torch.distributed.barrier()
    return path


def _write(directory: Path, step: int, state: dict[str, Any], fingerprint: dict[str, Any],
           world: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".{final.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()
    try:
        torch.save(state, tmp / STATE_FILE)
        _fsync_file(tmp / STATE_FILE)
        marker = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                  "step": step, "world_size": world, "fingerprint": fingerprint,
                  "state_sha256": _sha256(tmp / STATE_FILE),
                  "state_bytes": (tmp / STATE_FILE).stat().st_size,
                  "torch": torch.__version__}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, default=str) + "\n")
        _fsync_file(tmp / MARKER_FILE)
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (a rerun): swap, then drop the old
            old = directory / f".{final.name}.{secrets.token_hex(6)}.old.tmp"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _complete(path: Path) -> dict[str, Any] | None:
    """The marker of a complete checkpoint directory, else None."""
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
        ok = (marker.get("format") == CHECKPOINT_FORMAT
              and (path / STATE_FILE).stat().st_size == marker["state_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return marker if ok else None


def _step_dirs(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _prune(directory: Path, keep: int) -> None:
    complete = [p for _, p in _step_dirs(directory) if _complete(p) is not None]
    for p in complete[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    for p in directory.iterdir():  # leftovers of saves that crashed (only rank 0 writes)
        if p.name.startswith(".step-") and p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True)


def find_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The last complete checkpoint at ``path``: a checkpoint directory itself, a directory
    of ``step-<N>`` checkpoints, or a run directory with a ``checkpoints/`` subdirectory.
    Temporary directories of an interrupted save and directories without a valid marker
    are never returned. None when there is none."""
    path = Path(path)
    if _complete(path) is not None:
        return path
    for directory in (path / "checkpoints", path):
        for _, p in reversed(_step_dirs(directory)):
            if _complete(p) is not None:
                return p
    return None


def load_checkpoint(path: str | os.PathLike[str], *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    hooks: Sequence[TrainingHook] = (),
                    generators: Mapping[str, np.random.Generator | torch.Generator] | None = None,
                    fingerprint: Mapping[str, Any] | None = None,
                    may_differ: Collection[str] = ()) -> Checkpoint:
    """Restore the last complete checkpoint at ``path`` (see :func:`find_checkpoint`).

    Validates before changing anything: the file's SHA-256, the fingerprint (when given:
    a ValueError names every config option, model or data that differs, except the config
    options in ``may_differ``), the world size,
    the hook names and the tensors' names and shapes. Then restores, in order, the trained
    tensors, the optimiser and scheduler, the hooks (the allocator re-freezes its
    selection), and this rank's RNG states. Under torch.distributed every rank calls it.
    """
    found = find_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint under {path} (looked for "
                                f"{Path(path) / 'checkpoints'}/step-<N>/{MARKER_FILE})")
    marker = _complete(found)
    assert marker is not None
    if marker.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{found}: checkpoint format version {marker.get('format_version')}, "
                         f"this graphopt reads {CHECKPOINT_VERSION}")
    if _sha256(found / STATE_FILE) != marker["state_sha256"]:
        raise ValueError(f"{found / STATE_FILE} is corrupt (its SHA-256 differs from the one "
                         f"recorded in {MARKER_FILE}); resume from an earlier checkpoint")
    if fingerprint is not None:
        _check_fingerprint(marker.get("fingerprint", {}), json.loads(json.dumps(
            dict(fingerprint), default=str)), found, may_differ)
    rank, world = _distributed()
    if marker["world_size"] != world:
        raise ValueError(f"cannot resume from {found}: it was made by {marker['world_size']} "
                         f"processes, this run has {world}")
    try:
        state = torch.load(found / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{found / STATE_FILE} cannot be read: {exc}") from None

    params = _trained_parameters(model, optimizer)
    saved = state["model"]
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        raise ValueError(f"cannot resume from {found}: its tensors do not match this model's "
                         f"trained parameters (missing: {missing[:5]}, unexpected: {extra[:5]})")
    for n, p in params.items():
        if tuple(saved[n].shape) != tuple(p.shape):
            raise ValueError(f"cannot resume from {found}: {n} has shape "
                             f"{tuple(saved[n].shape)} there, {tuple(p.shape)} in this model")
    mine = state["ranks"][rank]
    names = [h.name for h in hooks]
    if sorted(names) != sorted(mine["hooks"]):
        raise ValueError(f"cannot resume from {found}: it holds the states of the hooks "
                         f"{sorted(mine['hooks'])}, this run has {sorted(names)}")
    if (optimizer is None) != (state["optimizer"] is None) or \
            (scheduler is None) != (state["scheduler"] is None):
        raise ValueError(f"cannot resume from {found}: it was saved "
                         f"{'with' if state['optimizer'] is not None else 'without'} an optimiser "
                         f"and {'with' if state['scheduler'] is not None else 'without'} a scheduler")

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n].to(device=p.device, dtype=p.dtype))
    if optimizer is not None:
        optimizer.load_state_dict(_unpack(state["optimizer"]))
    if scheduler is not None:
        scheduler.load_state_dict(_unpack(state["scheduler"]))
    for h in hooks:
        h.load_state_dict(_unpack(mine["hooks"][h.name]))
    set_rng_state(mine["rng"], generators)
    return Checkpoint(found, int(state["step"]), _unpack(state["loop"]),
                      marker.get("fingerprint", {}))
