"""Export a principal-component adapter as a standard Hugging Face peft LoRA adapter.

A PC layer computes W = W_res + Σ_i a_i b_iᵀ with W_res = W₀ − Σ_i a⁰_i b⁰_iᵀ, so relative to
the pretrained weight W₀ its update is

    ΔW = W − W₀ = Σ_{i ∈ M} (a_i b_iᵀ − a⁰_i b⁰_iᵀ),

where M holds the nodes that moved from their initial values (nodes frozen after the
warm-up moved too; only a node still at (a⁰_i, b⁰_i) cancels out). That is a LoRA update of
rank ≤ 2|M| with scaling 1:

    lora_B = [a_{i₁} … a_{i_k}  −a⁰_{i₁} … −a⁰_{i_k}]   (d_out × 2k)
    lora_A = [b_{i₁}; …; b_{i_k}; b⁰_{i₁}; …; b⁰_{i_k}]  (2k × d_in),   ΔW = lora_B lora_A.

The written directory is what ``peft.PeftModel.from_pretrained(base, directory)`` reads:
``adapter_config.json`` (``peft_type: LORA``, the moved layers as ``target_modules``, their
ranks in ``rank_pattern`` with ``alpha_pattern`` = rank so that every scaling α/r is 1, the
task head in ``modules_to_save``) and ``adapter_model.safetensors`` with the keys
``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight`` and
``base_model.model.<head>.<param>``. Layers whose nodes never moved are left out.

``graphopt export-lora RUN_DIR OUT_DIR`` does the same for a saved run (or a bare adapter
directory): it rebuilds the trained model from the base checkpoint and the adapter (which
stores a⁰, b⁰, so no SVD is recomputed) and exports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt.peft.layers import PCLayer
from graphopt.peft.model import CONFIG_FILE, WEIGHTS_FILE, GraphoptModel, load_adapter

__all__ = ["LoRAExport", "lora_factors", "export_lora", "export_run", "main"]

#: Prefix of every key in a peft adapter file: PeftModel → LoraModel → the wrapped model.
PEFT_KEY_PREFIX = "base_model.model."
#: peft task types by the suffix of the transformers class name.
_TASK_TYPES = (("ForSequenceClassification", "SEQ_CLS"), ("ForTokenClassification", "TOKEN_CLS"),
               ("ForQuestionAnswering", "QUESTION_ANS"), ("ForCausalLM", "CAUSAL_LM"),
               ("LMHeadModel", "CAUSAL_LM"), ("ForConditionalGeneration", "SEQ_2_SEQ_LM"))


@dataclass(frozen=True)
class LoRAExport:
    """What :func:`export_lora` wrote: the directory, the rank 2k of each exported layer,
    the target layers left out because none of their nodes moved, and the head modules."""

    directory: Path
    ranks: dict[str, int]
    unchanged: list[str] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)


def _moved(layer: PCLayer) -> list[int]:
    """Indices i of the nodes with (a_i, b_i) ≠ (a⁰_i, b⁰_i), compared exactly."""
    return [i for i in range(layer.rank)
            if not (torch.equal(layer.pc_a[i].detach(), layer.a0[i])
                    and torch.equal(layer.pc_b[i].detach(), layer.b0[i]))]


@torch.no_grad()
def lora_factors(layer: PCLayer) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lora_A (2k × d_in), lora_B (d_out × 2k)): lora_B lora_A = Σ_{i∈M} a_i b_iᵀ − a⁰_i b⁰_iᵀ.

    M are the k nodes that moved; ``None`` when none did (ΔW = 0). Same dtype and device as
    the layer's factors; Linear orientation for Conv1D layers too (peft's ``fan_in_fan_out``
    transposes the product, not the factors).
    """
    moved = _moved(layer)
    if not moved:
        return None
    a = torch.stack([layer.pc_a[i].detach() for i in moved], dim=1)   # d_out × k
    b = torch.stack([layer.pc_b[i].detach() for i in moved], dim=0)   # k × d_in
    idx = torch.tensor(moved, device=layer.a0.device)
    lora_b = torch.cat([a, -layer.a0[idx].t()], dim=1)
    lora_a = torch.cat([b, layer.b0[idx]], dim=0)
    return lora_a.contiguous(), lora_b.contiguous()


def _task_type(model: nn.Module) -> str | None:
    name = type(model).__name__
    return next((t for suffix, t in _TASK_TYPES if name.endswith(suffix)), None)


def _name_or_path(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    value = getattr(config, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return str(value) if value else None


def _lora_config(ranks: dict[str, int], heads: list[str], *, fan_in_fan_out: bool,
                 task_type: str | None, base_model_name_or_path: str | None) -> dict[str, Any]:
    """The ``adapter_config.json`` of peft's LoraConfig: α = r per layer (scaling 1)."""
    counts = Counter(ranks.values())
    # The commonest rank (the largest on a tie) is the global r; the others are patterns.
    r = max(counts, key=lambda k: (counts[k], k))
    pattern = {name: k for name, k in ranks.items() if k != r}
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "target_modules": list(ranks),
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "lora_dropout": 0.0,
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": list(heads) or None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def _readme(config: dict[str, Any], num_labels: int | None) -> str:
    base = config["base_model_name_or_path"] or "<base model>"
    labels = f", num_labels={num_labels}" if num_labels else ""
    return (f"# LoRA adapter exported by graphopt\n\n"
            f"Exported from a graphopt principal-component adapter: for every listed layer\n"
            f"ΔW = Σ (a bᵀ − a⁰ b⁰ᵀ) over the nodes that moved, written as lora_B lora_A with\n"
            f"scaling 1. Load it with Hugging Face peft:\n\n"
            f"```python\nfrom peft import PeftModel\nfrom transformers import AutoModel"
            f"ForSequenceClassification\n\n"
            f"base = AutoModelForSequenceClassification.from_pretrained({base!r}{labels})\n"
            f"model = PeftModel.from_pretrained(base, \"<this directory>\")\n```\n")


def _write_atomic(directory: Path, files: dict[str, Any], *, overwrite: bool) -> None:
    """Write ``files`` (name -> bytes or a safetensors state dict) as the new ``directory``.

    Everything goes into a temporary directory beside ``directory`` first and is renamed into
    place at the end, so ``directory`` is either absent/untouched or complete.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"output {directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {directory} is not empty; choose another or "
                              "pass overwrite=True (--overwrite)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        for name, content in files.items():
            if isinstance(content, dict):
                save_file(content, str(tmp / name), metadata={"format": "pt"})
            else:
                (tmp / name).write_bytes(content)
        if directory.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    except BaseException:
        if old is not None and not directory.exists():
            os.replace(old / directory.name, directory)  # put the previous contents back
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export_lora(model: GraphoptModel, directory: str | os.PathLike[str], *,
                base_model_name_or_path: str | None = None,
                overwrite: bool = False) -> LoRAExport:
    """Write ``model``'s update as a Hugging Face peft LoRA adapter into ``directory``.

    Per target layer ΔW = Σ_{i∈M} (a_i b_iᵀ − a⁰_i b⁰_iᵀ) = lora_B lora_A (rank 2|M|, scaling
    1), M the nodes that moved; layers with M = ∅ are left out; the head modules are stored
    whole (``modules_to_save``). ``PeftModel.from_pretrained(base, directory)`` then computes
    what ``model`` computes (to floating-point rounding), before and after peft's
    ``merge_and_unload``.

    ``base_model_name_or_path`` defaults to the wrapped model's ``config.name_or_path``.
    Writing is atomic; a non-empty ``directory`` is refused (FileExistsError) unless
    ``overwrite``. Raises ValueError when the update cannot be written as LoRA exactly:
    trained bias nodes, or no node moved at all.
    """
    if not isinstance(model, GraphoptModel):
        raise TypeError(f"model must be a GraphoptModel, got {type(model).__name__}")
    if model._merged:
        raise ValueError("this GraphoptModel was merged and unloaded; export it before merging")
    layers = model.pc_layers()
    biased = [n for n, layer in layers.items() if layer.has_bias_node]
    if biased:
        raise ValueError(f"the adapter trains the biases of its target layers (bias_nodes=True: "
                         f"{biased[:3]}{' ...' if len(biased) > 3 else ''}); a peft LoRA "
                         "adapter stores no bias updates, so it cannot reproduce this model; "
                         "export supports bias_nodes=False")
    state: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    unchanged: list[str] = []
    conv1d: set[bool] = set()
    for name, layer in layers.items():
        factors = lora_factors(layer)
        if factors is None:
            unchanged.append(name)
            continue
        lora_a, lora_b = factors
        state[f"{PEFT_KEY_PREFIX}{name}.lora_A.weight"] = lora_a.cpu()
        state[f"{PEFT_KEY_PREFIX}{name}.lora_B.weight"] = lora_b.cpu()
        ranks[name] = int(lora_a.shape[0])
        conv1d.add(layer.is_conv1d)
    if not ranks:
        raise ValueError("no principal-component node moved from its initial value, so the "
                         "update ΔW is zero in every target layer: there is no LoRA adapter "
                         "to export (train the model first)")
    for pname, p in model.head_parameters().items():
        state[f"{PEFT_KEY_PREFIX}{pname}"] = p.detach().cpu().contiguous()
    base = model.base_model
    config = _lora_config(
        ranks, model.head_names, fan_in_fan_out=conv1d == {True}, task_type=_task_type(base),
        base_model_name_or_path=base_model_name_or_path or _name_or_path(base))
    num_labels = getattr(getattr(base, "config", None), "num_labels", None)
    _write_atomic(Path(directory), {
        WEIGHTS_FILE: state,
        CONFIG_FILE: (json.dumps(config, indent=2) + "\n").encode(),
        "README.md": _readme(config, num_labels).encode(),
    }, overwrite=overwrite)
    return LoRAExport(Path(directory), ranks, unchanged, list(model.head_names))


# --------------------------------------------------------------------------- saved runs

def _adapter_dir(path: Path) -> Path:
    """The graphopt adapter inside a run directory (``adapter/``) or ``path`` itself."""
    if not path.is_dir():
        raise FileNotFoundError(f"RUN_DIR {path} does not exist or is not a directory")
    for candidate in (path / "adapter", path):
        config = candidate / CONFIG_FILE
        if config.is_file():
            try:
                meta = json.loads(config.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{config} is not valid JSON: {exc}") from exc
            if isinstance(meta, dict) and meta.get("peft_type"):
                raise ValueError(f"{config} is already a peft {meta['peft_type']} adapter "
                                 "(a lora/pissa run); load it with peft directly")
            return candidate
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(f"no graphopt adapter in {path}: expected {path / 'adapter' / CONFIG_FILE} "
                            f"(a graphopt finetune run of a PC method: ggm, pc-all, random, "
                            f"top-importance) or {path / CONFIG_FILE}; found {found}")


def _base_model_path(run_dir: Path, adapter_dir: Path, base_model: str | os.PathLike[str] | None
                     ) -> Path:
    if base_model is not None:
        path, origin = Path(base_model), "--base-model"
    else:
        metrics = run_dir / "metrics.json"
        recorded = None
        if metrics.is_file():
            try:
                recorded = json.loads(metrics.read_text()).get("model")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise ValueError(f"{metrics} is not a valid metrics file ({exc}); pass "
                                 "--base-model PATH") from exc
        if not recorded:
            raise ValueError(f"the base model of the adapter in {adapter_dir} is not recorded "
                             f"(no 'model' in {metrics}); pass --base-model PATH")
        path, origin = Path(recorded), f"the base model recorded in {metrics}"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{origin}, {path}, is not a Hugging Face checkpoint directory "
                                "(no config.json there); pass --base-model PATH")
    return path


def _num_labels(run_dir: Path, adapter_dir: Path) -> int | None:
    """Classes of the trained head: from metrics.json, else the adapter's head tensors."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            names = json.loads(metrics.read_text())["data"]["label_names"]
            return len(names)
        except (KeyError, TypeError, ValueError):
            pass
    from safetensors import safe_open

    with safe_open(str(adapter_dir / WEIGHTS_FILE), framework="pt") as fh:
        # The output layer of a head is its 2-D weight with the fewest rows (classes < hidden).
        rows = [fh.get_slice(k).get_shape()[0] for k in fh.keys()
                if k.startswith("head.") and k.endswith(".weight")
                and len(fh.get_slice(k).get_shape()) == 2]
    return min(rows) if rows else None


def _load_base(path: Path, architecture: str, num_labels: int | None) -> nn.Module:
    import transformers
    from transformers.utils import logging as hf_logging

    cls = getattr(transformers, architecture, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"the adapter was trained on a {architecture}, which is not a "
                         "transformers model class; export it from Python with export_lora")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if num_labels is not None and architecture.endswith(("ForSequenceClassification",
                                                         "ForTokenClassification")):
        kwargs["num_labels"] = num_labels
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is replaced by the adapter's: its init is noise
    try:
        return cls.from_pretrained(str(path), **kwargs).eval()
    finally:
        hf_logging.set_verbosity(level)


def export_run(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
               base_model: str | os.PathLike[str] | None = None,
               overwrite: bool = False) -> LoRAExport:
    """Export the adapter of a ``graphopt finetune`` run (or a bare adapter directory).

    The base checkpoint is ``base_model`` or the ``model`` recorded in ``RUN_DIR/metrics.json``;
    the adapter is applied with :func:`~graphopt.peft.model.load_adapter`, which refuses an
    adapter saved for another base model (architecture, target shapes, weight checksums),
    and the result is written by :func:`export_lora`.
    """
    run_dir = Path(run_dir)
    adapter_dir = _adapter_dir(run_dir)
    config_file = adapter_dir / CONFIG_FILE
    try:
        meta = json.loads(config_file.read_text())
        architecture = meta["fingerprint"]["architecture"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{config_file} is not a graphopt adapter config "
                         f"(no fingerprint.architecture): {exc}") from exc
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"adapter file {adapter_dir / WEIGHTS_FILE} is missing")
    from safetensors import SafetensorError

    base_path = _base_model_path(run_dir, adapter_dir, base_model)
    try:
        base = _load_base(base_path, architecture, _num_labels(run_dir, adapter_dir))
        model = load_adapter(base, adapter_dir)
    except SafetensorError as exc:
        raise ValueError(f"{adapter_dir / WEIGHTS_FILE} is not a readable safetensors file: "
                         f"{exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{config_file} cannot be applied to the base model {base_path}: "
                         f"{exc}") from exc
    return export_lora(model, out_dir, base_model_name_or_path=str(base_path),
                       overwrite=overwrite)


def build_parser() -> argparse.ArgumentParser:
    """The ``graphopt export-lora`` argument parser."""
    p = argparse.ArgumentParser(
        prog="graphopt export-lora",
        description="Write the adapter of a graphopt run as a Hugging Face peft LoRA adapter "
                    "(adapter_config.json + adapter_model.safetensors) that "
                    "peft.PeftModel.from_pretrained, vLLM and TGI read.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a graphopt finetune output directory (with adapter/) or an adapter "
                        "directory")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where the LoRA adapter goes")
    p.add_argument("--base-model", type=Path, default=None, metavar="PATH",
                   help="base checkpoint directory (default: the model in RUN_DIR/metrics.json)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``graphopt export-lora``; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        result = export_run(args.run_dir, args.out_dir, base_model=args.base_model,
                            overwrite=args.overwrite)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        print(f"graphopt export-lora: error: {exc}", file=sys.stderr)
        return 2
    ranks = ", ".join(f"{n}: {r}" for n, r in result.ranks.items())
    print(f"wrote a peft LoRA adapter to {result.directory}: {len(result.ranks)} layers "
          f"({ranks}); {len(result.unchanged)} unchanged layers left out; modules_to_save "
          f"{result.modules_to_save}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
