"""Spectral parameter coordination (docs/algorithms.md §4): parameter graphs, the Dirichlet regulariser and
the spectral gradient filter, checked against dense float64 NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from graphopt.graph import knn_graph, laplacian
from graphopt.peft.config import GGMConfig, SpectralConfig
from graphopt.peft.param_graph import (
    GraphNode,
    ParameterGraph,
    Piece,
    build_parameter_graph,
    model_nodes,
)
from graphopt.peft.spectral_filter import SpectralGradientFilter
from graphopt.peft.spectral_reg import SpectralRegularizer

SETTINGS = settings(max_examples=15, deadline=None)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batch(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g, dtype=dtype), torch.randint(0, 3, (16,), generator=g)


def train(model: nn.Module, steps: int, hook=None, *, reg=None, clip: float | None = None,
          opt_cls=torch.optim.AdamW) -> list[torch.Tensor]:
    opt = opt_cls(model.parameters(), lr=0.05)
    for s in range(steps):
        x, y = batch(s, next(model.parameters()).dtype)
        loss = nn.functional.cross_entropy(model(x), y)
        if reg is not None:
            loss = loss + reg()
        opt.zero_grad()
        loss.backward()
        if hook is not None:
            hook()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def user_graph_model(W: np.ndarray, d: int, seed: int) -> tuple[nn.Parameter, ParameterGraph]:
    """One (n × d) parameter whose rows are the nodes of a user-given graph W."""
    torch.manual_seed(seed)
    n = W.shape[0]
    p = nn.Parameter(torch.randn(n, d, dtype=torch.float64))
    graph = ParameterGraph([GraphNode((Piece(p, n),), "P")], edges="user",
                           weights={str(d): torch.as_tensor(W)}).rebuild()
    return p, graph


@st.composite
def connected_weights(draw, n_min: int = 2, n_max: int = 9) -> np.ndarray:
    """Random symmetric non-negative W with a spanning path (so the graph is connected)."""
    n = draw(st.integers(n_min, n_max))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    W = rng.uniform(0, 1, (n, n)) * (rng.uniform(0, 1, (n, n)) < 0.4)
    W = np.triu(W, 1)
    W[np.arange(n - 1), np.arange(1, n)] = rng.uniform(0.1, 1.0, n - 1)
    return W + W.T


# -- parameter graphs --------------------------------------------------------------------------
def test_rows_nodes_grouped_by_shape_and_knn_edges_match_the_core():
    m = tiny_model()
    g = build_parameter_graph(m, nodes="rows", k=3)
    names = {b.name: b.node_names for b in g.blocks}
    assert names["6"] == [f"0.weight[{i}]" for i in range(8)]
    assert names["8"] == ["0.bias", "2.weight[0]", "2.weight[1]", "2.weight[2]"]
    blk = {b.name: b for b in g.blocks}["8"]
    X = torch.cat([m[0].bias.detach()[None], m[2].weight.detach()])
    torch.testing.assert_close(blk.values().detach(), X, rtol=0, atol=0)
    torch.testing.assert_close(blk.W, torch.as_tensor(knn_graph(X, 3)), rtol=0, atol=0)
    torch.testing.assert_close(blk.L, torch.as_tensor(laplacian(knn_graph(X, 3))), rtol=0, atol=0)
    # The 3-long bias is alone in its shape: no edges, no block.
    assert "3" not in names


def test_pc_nodes_are_a_b_pairs_of_the_pc_layer():
    from graphopt.peft.layers import PCLayer

    torch.manual_seed(0)
    model = nn.Sequential(PCLayer(nn.Linear(7, 5).double(), 3), nn.Tanh(), PCLayer(nn.Linear(5, 5).double(), 2))
    nodes = model_nodes(model, "auto")
    assert len(nodes) == 5 and all(len(n.pieces) == 2 for n in nodes)
    g = build_parameter_graph(model, k=2)
    blk = {b.name: b for b in g.blocks}
    a, b = model[0].factors()
    torch.testing.assert_close(blk["5x7"].values(), torch.cat([a.T, b], dim=1))
    assert blk["5x5"].n_nodes == 2


def test_lora_nodes_round_trip_gradients_through_transposed_pieces():
    r, d_in, d_out = 3, 5, 4
    A = nn.Parameter(torch.randn(r, d_in, dtype=torch.float64))
    B = nn.Parameter(torch.randn(d_out, r, dtype=torch.float64))
    node = GraphNode((Piece(B, r, transpose=True), Piece(A, r)), "lora")
    g = ParameterGraph([node], k=2).rebuild()
    (blk,) = g.blocks
    torch.testing.assert_close(blk.values(), torch.cat([B.T, A], dim=1))
    A.grad, B.grad = torch.randn_like(A), torch.randn_like(B)
    G = torch.randn(r, d_out + d_in, dtype=torch.float64)
    blk.set_grads_(G)
    torch.testing.assert_close(B.grad, G[:, :d_out].T, rtol=0, atol=0)
    torch.testing.assert_close(A.grad, G[:, d_out:], rtol=0, atol=0)


def test_hf_peft_lora_model_gets_rank_component_nodes():
    peft = pytest.importorskip("peft")

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(6, 6)
            self.value = nn.Linear(6, 6)

        def forward(self, x):
            return self.value(torch.tanh(self.query(x)))

    model = peft.get_peft_model(Tiny(), peft.LoraConfig(r=2, target_modules=["query", "value"]))
    nodes = model_nodes(model, "auto")
    assert len(nodes) == 2 and all(n.rows == 2 for n in nodes)
    g = build_parameter_graph(model, k=2)
    assert [b.n_nodes for b in g.blocks] == [4]


def test_rebuild_keeps_only_trainable_nodes_and_filter_follows():
    m = tiny_model()
    g = build_parameter_graph(m, nodes="rows", k=3)
    filt = SpectralGradientFilter(g, "heat:t=1", method="exact")
    x, y = batch(0)
    nn.functional.cross_entropy(m(x), y).backward()
    filt()
    m[0].bias.requires_grad_(False)
    m[0].bias.grad = None
    filt()  # the active set changed: the graph is rebuilt without the bias node
    assert {b.name: b.n_nodes for b in g.blocks}["8"] == 3
    assert g.version == 2


def test_signals_graph_uses_correlation_of_node_signals():
    m = tiny_model()
    nodes = model_nodes(m, "rows")
    sig = torch.randn(8, 12, dtype=torch.float64)
    g = build_parameter_graph(nodes, edges="signals", signals={"6": sig}, k=3)
    (blk,) = g.blocks  # the "8" block has no signals yet: no graph
    assert blk.name == "6"
    from graphopt.graph import similarity_graph

    torch.testing.assert_close(blk.W, torch.as_tensor(similarity_graph(sig, measure="correlation", k=3)))


# -- the filter --------------------------------------------------------------------------------
@SETTINGS
@given(W=connected_weights(), d=st.integers(1, 5), beta=st.floats(0, 1), t=st.floats(0.05, 3),
       seed=st.integers(0, 1000))
def test_exact_filter_matches_numpy_eigendecomposition(W, d, beta, t, seed):
    p, g = user_graph_model(W, d, seed)
    G = torch.randn(p.shape, dtype=torch.float64)
    p.grad = G.clone()
    filt = SpectralGradientFilter(g, f"heat:t={t}", beta=beta, method="exact")
    ratio = filt()
    L = np.diag(W.sum(1)) - W
    lam, U = np.linalg.eigh(L)
    Gn = G.numpy()
    ref = (1 - beta) * Gn + beta * (U @ np.diag(np.exp(-t * lam)) @ U.T @ Gn)
    np.testing.assert_allclose(p.grad.numpy(), ref, rtol=1e-9, atol=1e-11)
    want = np.sum((Gn - ref) ** 2) / np.sum(Gn ** 2)
    if beta > 0:
        np.testing.assert_allclose(float(ratio), want, rtol=1e-8, atol=1e-14)


@SETTINGS
@given(W=connected_weights(n_min=3), d=st.integers(1, 4), seed=st.integers(0, 1000))
def test_chebyshev_filter_close_to_exact(W, d, seed):
    p, g = user_graph_model(W, d, seed)
    G = torch.randn(p.shape, dtype=torch.float64)
    out = {}
    for method in ("exact", "chebyshev"):
        p.grad = G.clone()
        SpectralGradientFilter(g, "tikhonov:a=0.7", method=method, order=40)()
        out[method] = p.grad.clone()
    torch.testing.assert_close(out["chebyshev"], out["exact"], rtol=1e-5, atol=1e-6 * float(G.abs().max()))


@SETTINGS
@given(W=connected_weights(), d=st.integers(1, 5), seed=st.integers(0, 1000))
def test_lowpass_one_replaces_gradients_by_block_mean(W, d, seed):
    p, g = user_graph_model(W, d, seed)
    G = torch.randn(p.shape, dtype=torch.float64)
    p.grad = G.clone()
    SpectralGradientFilter(g, "lowpass:k=1")()
    torch.testing.assert_close(p.grad, G.mean(dim=0, keepdim=True).expand_as(G), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["exact", "chebyshev"])
@pytest.mark.parametrize("identity", ["beta0", "ones", "heat0"])
def test_identity_filters_leave_the_trajectory_bit_exact(method, identity):
    base = train(tiny_model(), 6)
    m = tiny_model()
    g = build_parameter_graph(m, nodes="rows", k=3)
    if identity == "beta0":
        filt = SpectralGradientFilter(g, "heat:t=1", beta=0.0, method=method)
    elif identity == "ones":
        filt = SpectralGradientFilter(g, lambda lam: torch.ones_like(lam), method=method)
    else:
        filt = SpectralGradientFilter(g, "heat:t=0", method=method)
    got = train(m, 6, filt)
    assert all(torch.equal(a, b) for a, b in zip(base, got))


def test_filter_changes_the_trajectory_and_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        m = tiny_model(3, torch.float32)
        filt = SpectralGradientFilter(build_parameter_graph(m, nodes="rows", k=3), "heat:t=2", beta=0.7)
        runs.append(train(m, 8, filt))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    plain = train(tiny_model(3, torch.float32), 8)
    assert not all(torch.equal(a, b) for a, b in zip(plain, runs[0]))


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.AdamW, torch.optim.RMSprop])
def test_filter_then_clip_and_clip_then_filter_respect_max_norm(opt_cls):
    max_norm = 0.05
    for order in ("filter-first", "clip-first"):
        m = tiny_model(1)
        g = build_parameter_graph(m, nodes="rows", k=3)
        filt = SpectralGradientFilter(g, "heat:t=1", beta=0.8, method="exact")
        params = list(m.parameters())
        opt = opt_cls(params, lr=0.01)
        for s in range(4):
            x, y = batch(s)
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            if order == "filter-first":
                filt()
                torch.nn.utils.clip_grad_norm_(params, max_norm)
            else:
                torch.nn.utils.clip_grad_norm_(params, max_norm)
                filt()  # a contraction: cannot undo the clipping
            norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
            assert float(norm) <= max_norm * (1 + 1e-12)
            opt.step()
        assert all(torch.isfinite(p).all() for p in params)


def test_grad_scaler_flow_unscale_then_filter_matches_unscaled_training():
    def run(scaled: bool) -> list[torch.Tensor]:
        m = tiny_model(2, torch.float32)
        filt = SpectralGradientFilter(build_parameter_graph(m, nodes="rows", k=3), "tikhonov:a=1", beta=0.5)
        opt = torch.optim.AdamW(m.parameters(), lr=0.02)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=scaled)
        for s in range(5):
            x, y = batch(s, torch.float32)
            opt.zero_grad()
            scaler.scale(nn.functional.cross_entropy(m(x), y)).backward()
            scaler.unscale_(opt)  # documented order: unscale, then filter, then step
            filt()
            scaler.step(opt)
            scaler.update()
        return [p.detach().clone() for p in m.parameters()]

    for a, b in zip(run(False), run(True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_gradients_are_left_for_the_scaler():
    p, g = user_graph_model(np.ones((3, 3)) - np.eye(3), 2, 0)
    G = torch.randn(3, 2, dtype=torch.float64)
    G[1, 0] = float("inf")
    p.grad = G.clone()
    SpectralGradientFilter(g, "heat:t=1")()
    assert torch.equal(p.grad, G)


# -- the regulariser ---------------------------------------------------------------------------
@SETTINGS
@given(W=connected_weights(), d=st.integers(1, 4), mu=st.floats(0, 10), seed=st.integers(0, 1000),
       asym=st.booleans())
def test_regulariser_gradient_is_mu_L_plus_LT_times_update(W, d, mu, seed, asym):
    p, g = user_graph_model(W, d, seed)
    reg = SpectralRegularizer(g, mu)
    (blk,) = g.blocks
    if asym:  # the formula holds for any L; the builders only ever make symmetric ones
        blk.L = blk.L + torch.triu(torch.rand(blk.L.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        p.add_(torch.randn(p.shape, dtype=torch.float64))
    Lnp = blk.L.numpy()
    delta = (p.detach() - reg._ref[id(p)]).numpy()
    want_grad = mu * (Lnp + Lnp.T) @ delta
    value = reg()
    np.testing.assert_allclose(float(value.detach()), mu * np.trace(delta.T @ Lnp @ delta), rtol=1e-10, atol=1e-12)
    value.backward()
    np.testing.assert_allclose(p.grad.numpy(), want_grad, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(reg.gradients()[blk.name].numpy(), want_grad, rtol=1e-9, atol=1e-10)
    # central finite differences of the value, entry by entry
    eps = 1e-6
    fd = np.zeros_like(delta)
    with torch.no_grad():
        for i in range(delta.shape[0]):
            for j in range(delta.shape[1]):
                p[i, j] += eps
                up = float(reg())
                p[i, j] -= 2 * eps
                down = float(reg())
                p[i, j] += eps
                fd[i, j] = (up - down) / (2 * eps)
    np.testing.assert_allclose(fd, want_grad, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want_grad).max()))


def test_regulariser_is_zero_at_reference_and_for_a_common_shift():
    m = tiny_model()
    reg = SpectralRegularizer(build_parameter_graph(m, nodes="rows", k=3), 2.0)
    assert float(reg().detach()) == 0.0
    with torch.no_grad():
        m[0].weight.add_(0.3)  # every node of block "6" moves by the same vector
    assert abs(float(reg().detach())) < 1e-12
    with torch.no_grad():
        m[0].weight[0].add_(1.0)
    assert float(reg().detach()) > 0.1


def test_regulariser_pulls_neighbouring_updates_together_in_training():
    m_plain, m_reg = tiny_model(4), tiny_model(4)
    g = build_parameter_graph(m_reg, nodes="rows", k=3)
    reg = SpectralRegularizer(g, 5.0)
    check = SpectralRegularizer(build_parameter_graph(m_plain, nodes="rows", k=3), 5.0)
    train(m_plain, 10)
    train(m_reg, 10, reg=reg)
    assert float(reg().detach()) < float(check().detach())


# -- bad input ---------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    m = tiny_model()
    g = build_parameter_graph(m, nodes="rows", k=3)
    with pytest.raises(ValueError, match="edges"):
        build_parameter_graph(m, nodes="rows", edges="gaussian-ish")
    with pytest.raises(ValueError, match="nodes"):
        build_parameter_graph(m, nodes="columns")
    with pytest.raises(ValueError, match="nodes='pc'"):
        build_parameter_graph(m, nodes="pc")
    with pytest.raises(ValueError, match="beta"):
        SpectralGradientFilter(g, "heat:t=1", beta=1.5)
    with pytest.raises(ValueError, match="beta"):
        SpectralGradientFilter(g, "heat:t=1", beta=-0.1)
    with pytest.raises(ValueError, match="mu"):
        SpectralRegularizer(g, -1.0)
    with pytest.raises(ValueError, match="nodes must be a non-empty"):
        build_parameter_graph([])
    with pytest.raises(ValueError, match="method"):
        SpectralGradientFilter(g, "heat:t=1", method="fft")
    with pytest.raises(ValueError, match="response"):
        SpectralGradientFilter(g, "bandpass:t=1")
    with pytest.raises(ValueError, match="not smooth"):
        SpectralGradientFilter(g, "lowpass:k=1", method="chebyshev")
    with pytest.raises(ValueError, match="k must"):
        build_parameter_graph(m, nodes="rows", k=0)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_parameter_graph(m, nodes="rows", include="nothing-matches")
    with pytest.raises(ValueError, match="rows"):
        Piece(m[0].weight, 3)
    with pytest.raises(TypeError, match="graph"):
        SpectralRegularizer(m, 1.0)


# -- transformers.Trainer hooks ----------------------------------------------------------------
class _TinyHF(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model(5, torch.float32)

    def forward(self, x, labels=None):
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def _trainer_run(tmp_path, spectral: bool):
    from transformers import Trainer, TrainingArguments

    from graphopt.peft.hooks import GraphoptCallback
    from graphopt.peft.spectral_coordination import SpectralCoordination

    torch.manual_seed(0)
    model = _TinyHF()
    graph = build_parameter_graph(model, nodes="rows", k=3)
    coord = SpectralCoordination(graph, mu=1.0, response="heat:t=1", beta=0.9) if spectral else None
    data = [{"x": x, "labels": y} for x, y in zip(*batch(7, torch.float32))]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4,
                             learning_rate=0.05, report_to=[], use_cpu=True, save_strategy="no",
                             logging_steps=1, seed=0, dataloader_num_workers=0, max_grad_norm=1.0)
    callbacks = [GraphoptCallback([coord], model)] if spectral else []
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    reg = coord.reg if spectral else None
    filt = coord.filter if spectral else None
    return model, reg, filt, trainer


def test_trainer_callback_filters_in_pre_optimizer_step_and_adds_the_regulariser(tmp_path):
    pytest.importorskip("transformers")
    model, reg, filt, trainer = _trainer_run(tmp_path / "a", True)
    assert len(filt.removed) == 4 and all(0 < float(r) < 1 for r in filt.removed)
    assert reg.last_value is not None and float(reg.last_value) > 0
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(train_logs) == 4
    assert all("spectral_removed_energy" in h and "spectral_reg" in h for h in train_logs)
    assert train_logs[0]["spectral_reg"] == 0.0 and train_logs[-1]["spectral_reg"] > 0  # Θ = Θ⁰ at step 1
    plain, *_ = _trainer_run(tmp_path / "b", False)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))


# -- CLI hooks ---------------------------------------------------------------------------------
def _parser():
    import argparse

    from graphopt.peft.options import add_options

    parser = argparse.ArgumentParser()
    add_options(parser, SpectralConfig)
    return parser


def _config(argv):
    from graphopt.peft.options import config_from_args

    return config_from_args(SpectralConfig, _parser().parse_args(argv))


def _loop(model, coord, steps, freeze_at=None):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for s in range(steps):
        if freeze_at is not None and s == freeze_at:
            model[0].bias.requires_grad_(False)
            model[0].bias.grad = None
        x, y = batch(s, next(model.parameters()).dtype)
        loss = nn.functional.cross_entropy(model(x), y)
        if coord is not None and (term := coord.loss_term(model)) is not None:
            loss = loss + term
        opt.zero_grad()
        loss.backward()
        if coord is not None:
            coord.before_optimizer_step(model)
        opt.step()


def test_cli_options_parse_and_reject_bad_values(capsys):
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    args = _config(["--spectral-reg", "0.1", "--spectral-filter", "heat:t=2",
                    "--spectral-mix", "0.5", "--spectral-graph", "rows"])
    assert (args.reg, args.filter, args.mix, args.graph) == (0.1, "heat:t=2", 0.5, "rows")
    assert build_spectral_coordination(_config([]), tiny_model(), "full") is None
    for bad in (["--spectral-mix", "1.5"], ["--spectral-filter", "bandpass:t=1"],
                ["--spectral-reg", "-1"], ["--spectral-graph", "spectral"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(bad)
    assert "spectral-mix" in capsys.readouterr().err


def test_coordination_hooks_in_a_plain_loop_record_metrics():
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    m = tiny_model()
    args = _config(["--spectral-reg", "0.5", "--spectral-filter", "tikhonov:a=1",
                                 "--spectral-mix", "0.8", "--spectral-graph", "rows", "--spectral-k", "3"])
    coord = build_spectral_coordination(args, m, "full")
    _loop(m, coord, 5)
    s = coord.summary()
    assert s["steps"] == 5 and s["blocks"] == {"6": 8, "8": 4} and s["filter"] == "tikhonov:a=1"
    assert s["reg_per_step"][0] == 0.0 and s["reg_per_step"][-1] > 0
    assert all(0 < r < 1 for r in s["removed_energy_per_step"])
    assert set(coord.metrics()) == {"spectral_reg", "spectral_removed_energy"}


def test_coordination_follows_a_selection_and_knn_keeps_pretrained_distances():
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    m = tiny_model()
    args = _config(["--spectral-filter", "heat:t=1", "--spectral-graph", "rows",
                                 "--spectral-k", "3", "--spectral-reg", "0.1"])
    coord = build_spectral_coordination(args, m, "bitfit")
    W0 = {b.name: b.W.clone() for b in coord.graph.blocks}
    pretrained_rows = m[2].weight.detach().clone()
    _loop(m, coord, 6, freeze_at=3)
    assert m[0].bias.grad is None  # the filter never creates a gradient for a frozen node
    blocks = {b.name: b for b in coord.graph.blocks}
    assert blocks["8"].n_nodes == 3 and blocks["8"].node_names == [f"2.weight[{i}]" for i in range(3)]
    assert not torch.equal(m[2].weight.detach(), pretrained_rows)
    torch.testing.assert_close(blocks["6"].W, W0["6"], rtol=0, atol=0)
    torch.testing.assert_close(blocks["8"].W, torch.as_tensor(knn_graph(pretrained_rows, 2)), rtol=0, atol=0)


def test_scores_graph_is_built_after_its_window():
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    m = tiny_model()
    args = _config(["--spectral-filter", "heat:t=1", "--spectral-graph", "scores",
                                 "--spectral-window", "4", "--spectral-k", "3"])
    coord = build_spectral_coordination(args, m, "full")
    assert coord.graph.blocks == []
    _loop(m, coord, 3)
    assert coord.graph.blocks == [] and all(np.isnan(coord.removed_history))
    _loop(m, coord, 2)
    assert {b.name for b in coord.graph.blocks} == {"6", "8"}
    assert not np.isnan(coord.removed_history[-1])


def test_auto_method_picks_the_cheaper_filter_per_block():
    m = tiny_model()
    filt = SpectralGradientFilter(build_parameter_graph(m, nodes="rows", k=3), "heat:t=1")
    n = 5000  # a path graph: nnz ≈ 3n, far cheaper by Chebyshev than by 2n² products
    i = torch.arange(n - 1)
    W = torch.sparse_coo_tensor(torch.stack([torch.cat([i, i + 1]), torch.cat([i + 1, i])]),
                                torch.ones(2 * (n - 1), dtype=torch.float64), (n, n),
                                check_invariants=True)
    method, L = filt._plan(laplacian(W))
    assert method == "chebyshev" and L.layout != torch.strided
    method, L = filt._plan(torch.as_tensor(laplacian(np.ones((6, 6)) - np.eye(6))))
    assert method == "exact"
    x, y = batch(0)
    nn.functional.cross_entropy(m(x), y).backward()
    filt()
    assert filt.block_methods == {"6": "exact", "8": "exact"}
    lp = SpectralGradientFilter(build_parameter_graph(m, nodes="rows", k=3), "lowpass:k=2")
    lp()
    assert set(lp.block_methods.values()) == {"exact"}


# -- every finetune method ---------------------------------------------------------------------
# random / top-importance build the same PC nodes and selection flow as ggm.
@pytest.mark.parametrize("method", ["ggm", "pc-all", "bitfit", "full", "lora", "pissa"])
def test_coordination_combines_with_every_finetune_method(method):
    transformers = pytest.importorskip("transformers")
    from graphopt.peft.methods import prepare_method
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    if method in ("lora", "pissa"):
        pytest.importorskip("peft")
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    base = transformers.BertForSequenceClassification(cfg)
    opts = GGMConfig(rank=3, n_important=2, n_select=4, warmup_steps=2, scoring_steps=3, seed=0)
    prepared = prepare_method(method, base, opts, steps_per_epoch=4)
    model = prepared.model
    args = _config(["--spectral-reg", "0.1", "--spectral-filter", "heat:t=1",
                                 "--spectral-mix", "0.7", "--spectral-k", "3"])
    coord = build_spectral_coordination(args, model, method)
    assert coord.graph.blocks, f"{method}: no block graph"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(7):
        ids = torch.randint(5, 30, (4, 8), generator=gen)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                    labels=torch.randint(0, 3, (4,), generator=gen))
        loss = out.loss + coord.loss_term(model)
        opt.zero_grad()
        loss.backward()
        coord.before_optimizer_step(model)
        opt.step()
        if prepared.allocator is not None:
            prepared.allocator.step()
    s = coord.summary()
    assert all(np.isfinite(s["removed_energy_per_step"])) and all(np.isfinite(s["reg_per_step"]))
    assert s["reg_per_step"][-1] > 0
    if prepared.allocator is not None:  # selection froze nodes: graphs cover the survivors only
        assert prepared.allocator.allocation is not None
        assert sum(s["blocks"].values()) <= opts.n_select
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_benchmark_summary_counts_steps_to_90_percent_of_the_best_run():
    from _benchmarks import load_benchmark

    _summarise = load_benchmark("spectral_training")._summarise

    def run(config, seed, accs):
        return {"config": config, "seed": seed, "curve": list(zip([0, 5, 10], accs)),
                "step_s": [0.1, 0.2], "hook_s": [], "removed_energy": [], "reg": []}

    runs = [run("baseline", 0, [0.2, 0.5, 0.8]), run("filter", 0, [0.2, 0.75, 0.7]),
            run("baseline", 1, [0.2, 0.4, 0.6]), run("filter", 1, [0.2, 0.3, 0.5])]
    s = _summarise(runs, ["baseline", "filter"])
    # seed 0: best 0.8 -> threshold 0.72: baseline at step 10, filter at 5;
    # seed 1: best 0.6 -> threshold 0.54: baseline at 10, filter never.
    assert s["baseline"]["steps_to_90"] == (10.0, 0.0) and s["baseline"]["reached_90"] == "2/2"
    assert s["filter"]["steps_to_90"] == (5.0, 0.0) and s["filter"]["reached_90"] == "1/2"
    np.testing.assert_allclose(s["filter"]["final_acc"], (0.6, np.std([0.7, 0.5], ddof=1)))
