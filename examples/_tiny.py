"""Shared helper of the examples: a tiny BERT checkpoint and a 3-class CSV data set on disk.

Not an example itself. :func:`build_tiny` writes, under ``root``,

- ``model/``: a randomly initialised 2-layer BERT (hidden 32, 2 heads) with a WordPiece
  tokenizer over a 26-word vocabulary, saved with ``save_pretrained``;
- ``data.csv``: 90 labelled sentences (``text,label``; classes sport / business / arts), each
  made of words of its class, so even a tiny model can learn the task in a few steps.

Everything is local and deterministic (fixed seeds); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Words of each class; a sentence of class c draws 5 of them plus 2 filler words.
WORDS: dict[str, list[str]] = {
    "sport": ["goal", "match", "team", "coach", "league", "cup"],
    "business": ["market", "shares", "profit", "bank", "price", "trade"],
    "arts": ["film", "actor", "music", "award", "star", "show"],
}
FILLER = ["the", "a", "of"]


def build_tiny(root: str | Path, n_rows: int = 90, seed: int = 0) -> tuple[Path, Path]:
    """Write the tiny checkpoint and data set under ``root``; return (model_dir, data_csv)."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars

    root = Path(root)
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER]
    vocab += [w for ws in WORDS.values() for w in ws]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    tokenizer.save_pretrained(model_dir)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)
    torch.manual_seed(seed)
    transformers.BertModel(config).save_pretrained(model_dir)

    rng = np.random.default_rng(seed)
    names = list(WORDS)
    lines = ["text,label"]
    for i in range(n_rows):
        label = names[i % len(names)]
        words = list(rng.choice(WORDS[label], size=5)) + list(rng.choice(FILLER, size=2))
        lines.append(" ".join(rng.permutation(words)) + f",{label}")
    data_csv = root / "data.csv"
    data_csv.write_text("\n".join(lines) + "\n")
    return model_dir, data_csv
