"""Scores -> covariance -> l2g_ggm -> selection, the schedule, and the Trainer callback."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from graphopt.exceptions import RegularizationWarning  # noqa: E402
from graphopt.peft.allocation import (  # noqa: E402
    ALLOCATION_JSON,
    Allocation,
    allocate,
    important_nodes,
    normalised_log_scores,
    sample_covariance,
)
from graphopt.peft.allocator import GGMAllocator  # noqa: E402
from graphopt.peft.hooks import GraphoptCallback  # noqa: E402
from graphopt.peft.config import GGMConfig  # noqa: E402
from graphopt.peft.model import get_graphopt_model  # noqa: E402
from graphopt.peft.scoring import NodeScorer  # noqa: E402
from graphopt.solvers.l2g import l2g_ggm  # noqa: E402
from graphopt.solvers.objectives import l2g_objective  # noqa: E402
from graphopt.solvers.reference import l2g_ggm_cvxpy  # noqa: E402


def tiny_bert(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=64, max_position_embeddings=40,
                                  num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


# ---------------------------------------------------------------- scoring ---------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 5),
       sizes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
       bias=st.integers(0, 2), beta1=st.floats(0.1, 0.95), beta2=st.floats(0.1, 0.95))
def test_scorer_matches_elementwise_reference(seed, steps, sizes, bias, beta1, beta2):
    gen = torch.Generator().manual_seed(seed)
    nodes = [SimpleNamespace(params=(torch.nn.Parameter(torch.randn(a, generator=gen, dtype=torch.float64)),
                                     torch.nn.Parameter(torch.randn(b, generator=gen, dtype=torch.float64))))
             for a, b in sizes]
    nodes += [SimpleNamespace(params=(torch.nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64)),))
              for _ in range(bias)]
    scorer = NodeScorer(nodes, beta1, beta2)
    ema_i = {id(p): np.zeros(p.numel()) for n in nodes for p in n.params}
    ema_u = {id(p): np.zeros(p.numel()) for n in nodes for p in n.params}
    for _ in range(steps):
        expected = []
        for n in nodes:
            means = []
            for p in n.params:
                p.grad = None if torch.rand((), generator=gen) < 0.1 else torch.randn(
                    p.shape, generator=gen, dtype=torch.float64)
                g = np.zeros(p.numel()) if p.grad is None else p.grad.numpy()
                i_t = np.abs(p.detach().numpy() * g)
                ema_i[id(p)] = beta1 * ema_i[id(p)] + (1 - beta1) * i_t
                ema_u[id(p)] = beta2 * ema_u[id(p)] + (1 - beta2) * np.abs(i_t - ema_i[id(p)])
                means.append(np.mean(ema_i[id(p)] * ema_u[id(p)]))
            expected.append(np.mean(means))
        got = scorer.update()
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8,
                                   atol=1e-12 * max(expected))
        with torch.no_grad():
            for n in nodes:
                for p in n.params:
                    p.add_(0.1)
    assert scorer.samples().shape == (steps, len(nodes))


# ---------------------------------------------------------------- covariance ------------------
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(2, 12), n=st.integers(1, 9))
def test_covariance_matches_numpy(seed, t, n):
    rng = np.random.default_rng(seed)
    x = rng.lognormal(-10, 3, size=(t, n))
    x[rng.random((t, n)) < 0.15] = 0.0  # log 0 -> −200
    z_ref = np.maximum(np.log(np.where(x > 0, x, 1.0)), -200.0)
    z_ref[x == 0] = -200.0
    z_ref = z_ref / np.linalg.norm(z_ref, axis=1, keepdims=True)
    z = normalised_log_scores(torch.from_numpy(x))
    np.testing.assert_allclose(z.numpy(), z_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sample_covariance(z).numpy(),
                               np.cov(z_ref, rowvar=False).reshape(n, n), rtol=1e-10, atol=1e-14)
    k = int(rng.integers(1, n + 1))
    means = z_ref.mean(axis=0)
    top = important_nodes(z, k)
    assert len(top) == k and top == sorted(top)
    # every chosen node beats (or ties) every unchosen one
    rest = [j for j in range(n) if j not in top]
    if rest:
        assert means[top].min() >= means[rest].max() - 1e-15


def _synthetic_samples(seed: int, t: int, n: int) -> np.ndarray:
    """Log-normal scores with a few correlated blocks, like real node scores."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((t, 3))
    load = rng.standard_normal((3, n)) * (rng.random((1, n)) < 0.6)
    return np.exp(-12 + rng.standard_normal(n) + factors @ load + 0.5 * rng.standard_normal((t, n)))


@pytest.mark.parametrize("select_by", ["omega", "delta"])
def test_ggm_policy_matches_independent_pipeline(select_by):
    """allocate() == NumPy covariance + top-k means + l2g_ggm + ‖M_{I,j}‖₂ ranking by hand."""
    x = _synthetic_samples(0, 30, 8)
    cfg = GGMConfig(n_important=2, n_select=5, tau=0.5, lam=2.0, g=0.9, select_by=select_by)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alloc = allocate(x, [f"n{i}" for i in range(8)], cfg)
        z = np.log(x)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        s = np.cov(z, rowvar=False)
        important = sorted(np.argsort(-z.mean(axis=0), kind="stable")[:2].tolist())
        res = l2g_ggm(s, important, tau=0.5, lam=2.0, g=0.9)
    m = np.asarray(res.precision if select_by == "omega" else res.delta)
    rest = [j for j in range(8) if j not in important]
    links = np.linalg.norm(m[np.ix_(important, rest)], axis=0)
    expected = sorted(important + [rest[i] for i in np.argsort(-links, kind="stable")[:3]])
    assert alloc.important == important
    assert alloc.selected == expected
    np.testing.assert_allclose(alloc.omega, np.asarray(res.precision), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(alloc.scores, z.mean(axis=0), rtol=1e-12)
    assert alloc.solver["converged"] == res.converged
    assert alloc.regularization == res.regularization


def test_ggm_policy_agrees_with_cvxpy_reference_at_g1():
    """End to end at g = 1 (convex): Ω and the selection match the cvxpy optimum."""
    x = _synthetic_samples(0, 40, 8)
    cfg = GGMConfig(n_important=2, n_select=5, tau=0.5, lam=2.0, g=1.0)
    alloc = allocate(x, [f"n{i}" for i in range(8)], cfg)
    z = np.log(x)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    important = sorted(np.argsort(-z.mean(axis=0), kind="stable")[:2].tolist())
    s = np.cov(z, rowvar=False)
    exact = l2g_ggm_cvxpy(s, important, tau=0.5, lam=2.0)
    ref = np.asarray(exact.precision)
    assert alloc.solver["converged"] and alloc.regularization == 0.0
    # Ω ~ 1e4 here (S ~ 1e-4): the conic solver's own accuracy is ~1e-3, so compare the
    # objective (ours may not be worse) and Ω loosely.
    f = lambda om, de: l2g_objective(s, om, de, important, tau=0.5, lam=2.0, g=1.0)  # noqa: E731
    f_ours, f_ref = f(alloc.omega, alloc.delta), f(ref, np.asarray(exact.delta))
    assert f_ours <= f_ref + 1e-6 * abs(f_ref)
    assert np.linalg.norm(alloc.omega - ref) <= 1e-2 * np.linalg.norm(ref)
    rest = [j for j in range(8) if j not in important]
    links = np.linalg.norm(ref[np.ix_(important, rest)], axis=0)
    order = np.argsort(-links, kind="stable")
    # the reference ranking is unambiguous at the cut, so the selections must agree exactly
    assert links[order[2]] - links[order[3]] > 1e-2 * links.max()
    assert alloc.selected == sorted(important + [rest[i] for i in order[:3]])


def test_ggm_records_ridge_for_rank_deficient_scores_and_is_deterministic():
    x = _synthetic_samples(1, 6, 12)  # T < n: S is singular
    cfg = GGMConfig(n_important=2, n_select=4)
    with pytest.warns(RegularizationWarning):
        a = allocate(x, [f"n{i}" for i in range(12)], cfg)
    assert a.regularization > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        b = allocate(x, [f"n{i}" for i in range(12)], cfg)
    assert a.selected == b.selected and len(a.selected) == 4
    assert set(a.important) <= set(a.selected)
    with pytest.raises(ValueError, match="singular"):
        allocate(x, [f"n{i}" for i in range(12)], GGMConfig(n_important=2, n_select=4,
                                                            regularization=None))


def test_baseline_policies_same_budget_and_seeded():
    x = _synthetic_samples(2, 10, 20)
    names = [f"n{i}" for i in range(20)]
    r1 = allocate(x, names, GGMConfig(selection="random", n_important=3, n_select=7, seed=1))
    r1b = allocate(x, names, GGMConfig(selection="random", n_important=3, n_select=7, seed=1))
    r2 = allocate(x, names, GGMConfig(selection="random", n_important=3, n_select=7, seed=2))
    assert r1.selected == r1b.selected and r1.selected != r2.selected and len(r1.selected) == 7
    top = allocate(x, names, GGMConfig(selection="top-importance", n_important=3, n_select=7))
    z = normalised_log_scores(torch.from_numpy(x)).numpy().mean(axis=0)
    assert top.selected == sorted(np.argsort(-z, kind="stable")[:7].tolist())
    none = allocate(x, names, GGMConfig(selection="none"))
    assert none.selected == list(range(20))


def test_allocation_errors():
    x = _synthetic_samples(3, 5, 6)
    names = [f"n{i}" for i in range(6)]
    with pytest.raises(ValueError, match=r"n_select \(7\) exceeds the number of nodes \(6\)"):
        allocate(x, names, GGMConfig(n_important=2, n_select=7))
    with pytest.raises(ValueError, match=r"shape \(T, 5\)"):
        allocate(x, names[:5], GGMConfig(n_important=2, n_select=3))
    with pytest.raises(ValueError, match="non-negative"):
        allocate(-x, names, GGMConfig(n_important=2, n_select=3))
    with pytest.raises(ValueError, match="at least 2 scoring steps"):
        allocate(x[:1], names, GGMConfig(n_important=2, n_select=3))
    with pytest.raises(ValueError, match="n_important"):
        GGMConfig(n_important=4, n_select=3)


def test_allocation_save_load_plot(tmp_path):
    x = _synthetic_samples(4, 12, 6)
    names = [f"bert.encoder.layer.{l}.attention.self.{m}:pc{i}"
             for l in range(2) for m in ("query", "value") for i in range(2)][:6]
    names[-1] = "bert.encoder.layer.1.attention.self.value:bias"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        a = allocate(x, names, GGMConfig(n_important=2, n_select=3), step=7)
    a.save(tmp_path)
    b = Allocation.load(tmp_path)
    assert b.selected == a.selected and b.important == a.important and b.step == 7
    np.testing.assert_array_equal(b.omega, a.omega)
    np.testing.assert_array_equal(b.samples, a.samples)
    assert b.solver == a.solver and b.node_names == names
    png = a.plot(tmp_path / "plot" / "selected.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = a.selected_per_module()
    assert sum(s for s, _ in counts.values()) == 3 and sum(t for _, t in counts.values()) == 6
    (tmp_path / ALLOCATION_JSON).unlink()
    with pytest.raises(FileNotFoundError, match=ALLOCATION_JSON):
        Allocation.load(tmp_path)


# ---------------------------------------------------------------- schedule --------------------
def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 64, (8, 10), generator=g), torch.randint(0, 3, (8,), generator=g)


def test_plain_loop_schedule_freezes_exactly_and_keeps_training():
    cfg = GGMConfig(rank=4, bias_nodes=True, n_important=3, n_select=6, warmup_steps=2,
                    scoring_steps=4)
    model = get_graphopt_model(tiny_bert(), cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    alloc = GGMAllocator(model)
    phases = []
    snapshot = None
    for t in range(10):
        ids, y = _batch(t)
        opt.zero_grad()
        model(input_ids=ids, labels=y).loss.backward()
        opt.step()
        alloc.step()
        phases.append(alloc.phase)
        if alloc.allocation is not None and snapshot is None:
            snapshot = [[p.detach().clone() for p in n.params] for n in model.nodes]
    # the phase the *next* step belongs to: steps 1-2 warm up, 3-6 score, selection after 6
    assert phases == ["warmup"] + ["scoring"] * 4 + ["trained"] * 5
    assert alloc.allocation.step == 6 and alloc.allocation.samples.shape == (4, len(model.nodes))
    selected = set(alloc.allocation.selected)
    assert len(selected) == 6
    for n in model.nodes:
        moved = any(not torch.equal(p.detach(), s) for p, s in zip(n.params, snapshot[n.index]))
        assert moved == (n.index in selected), n.name
    head = sum(p.numel() for p in model.base_model.classifier.parameters())
    node_size = sum(p.numel() for n in model.nodes if n.index in selected for p in n.params)
    assert model.trainable_parameter_count()[0] == head + node_size


def test_allocator_input_errors():
    model = get_graphopt_model(tiny_bert(), GGMConfig(rank=2, n_important=2, n_select=100,
                                                      warmup_steps=1, scoring_steps=2))
    with pytest.raises(ValueError, match=r"n_select \(100\) exceeds the number of nodes \(12\)"):
        GGMAllocator(model)
    with pytest.raises(ValueError, match="at least 2 scoring steps"):
        GGMAllocator(model, GGMConfig(rank=2, n_important=2, n_select=4, warmup_steps=1,
                                      scoring_steps=1))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        GGMAllocator(model, GGMConfig(rank=2, n_important=2, n_select=4))
    # epochs are converted with steps_per_epoch
    a = GGMAllocator(model, GGMConfig(rank=2, n_important=2, n_select=4, warmup_epochs=0.5,
                                      scoring_epochs=1), steps_per_epoch=6)
    assert (a.warmup_steps, a.scoring_steps, a.phase) == (3, 6, "warmup")
    with pytest.raises(TypeError, match="GraphoptModel"):
        GGMAllocator(model.base_model, steps_per_epoch=3)


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        ids, y = _batch(i)
        return {"input_ids": ids[0], "labels": y[0]}


def test_trainer_callback_selects_and_saves(tmp_path):
    model = get_graphopt_model(tiny_bert(), GGMConfig(rank=2, n_important=2, n_select=5,
                                                      warmup_epochs=1, scoring_epochs=1))
    allocator = GGMAllocator(model, steps_per_epoch="from_loop", save_dir=tmp_path / "allocation")
    cb = GraphoptCallback([allocator], model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=3,
        learning_rate=1e-2, weight_decay=0.1, report_to=[], save_strategy="no",
        logging_strategy="no", remove_unused_columns=False, label_names=["labels"],
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Toy(), callbacks=[cb])
    trainer.train()
    alloc = allocator.allocation
    assert alloc is not None and alloc.step == 12  # 6 steps/epoch: warm-up 6, scoring 6
    assert alloc.samples.shape == (6, len(model.nodes)) and len(alloc.selected) == 5
    assert [n.index for n in model.nodes if n.trainable] == alloc.selected
    assert Allocation.load(tmp_path / "allocation").selected == alloc.selected
