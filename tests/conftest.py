"""Fixtures shared by several test modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices gain nothing from threads, and on a shared CPU OpenMP threads waiting
    for descheduled siblings slow each small op by ~10x; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: Words of each class of the tiny labelled data set.
WORDS = {
    0: ["goal", "match", "team", "coach", "league", "cup"],
    1: ["market", "shares", "profit", "bank", "price", "trade"],
    2: ["film", "actor", "music", "award", "star", "show"],
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 2-layer BERT checkpoint + WordPiece tokenizer + a 3-class CSV data set on disk."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny")
    model_dir = root / "model"
    model_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of"]
    vocab += [w for ws in WORDS.values() for w in ws]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    tok.save_pretrained(model_dir)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for i in range(90):
        c = i % 3
        words = list(rng.choice(WORDS[c], size=5)) + list(rng.choice(["the", "a", "of"], size=2))
        lines.append(" ".join(rng.permutation(words)) + f",{['sport', 'business', 'arts'][c]}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return root
