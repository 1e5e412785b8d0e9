"""Parameter graphs: a model's trainable parameters as graph nodes (docs/algorithms.md §4).

A *node* is a vector θ_i assembled from one or more parameter pieces; nodes whose pieces have
the same shapes form a *block* and each block gets its own graph W_b and Laplacian L_b
(nodes of different sizes cannot share a distance-kernel edge). Node choices:

- ``"pc"``: the principal-component nodes of a GGM adapter, θ_i = [a_i; b_i] (every module
  with a ``node_parameters()`` method, i.e. :class:`graphopt.peft.layers.PCLayer`);
- ``"lora"``: the rank components of Hugging Face peft LoRA layers, θ_i = [B[:, i]; A[i, :]]
  (the LoRA analogue of a PC node);
- ``"rows"``: the rows of every chosen trainable matrix (a 1-D trainable parameter such as a
  bias is one node); embeddings and the task head are excluded by default;
- ``"auto"``: ``pc`` when the model has PC layers, else ``lora`` when it has LoRA layers,
  else ``rows``;
- a user list of nodes, each a sequence of :class:`Piece`.

Edge choices (``edges=``):

- ``"knn"``: Gaussian k-NN kernel on the pretrained node vectors Θ₀,
  W_ij = exp(−‖θ_i⁰ − θ_j⁰‖² / σ²), σ = median neighbour distance (:func:`graphopt.graph.knn_graph`);
- ``"signals"``: co-variation of node signals S (n × T, e.g. per-step importance scores or
  gradient statistics): W_ij = max(corr(S_i, S_j), 0) sparsified to k neighbours
  (:func:`graphopt.graph.similarity_graph`);
- ``"user"``: a weight matrix per block given by the caller.

Only *active* nodes (every piece ``requires_grad``) enter a graph, so after a GGM selection
freezes nodes, :meth:`ParameterGraph.rebuild` restricts every block to the surviving nodes.
Rebuilding costs one k-NN graph per block (chunked, no n × n distance matrix for large n).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import knn_graph, laplacian, similarity_graph

__all__ = [
    "Piece",
    "GraphNode",
    "ParameterBlock",
    "ParameterGraph",
    "model_nodes",
    "build_parameter_graph",
    "NODE_KINDS",
    "EDGE_KINDS",
    "DEFAULT_EXCLUDE",
]

NODE_KINDS = ("auto", "pc", "lora", "rows")
EDGE_KINDS = ("knn", "signals", "user")

#: Parameters never turned into row nodes unless the caller says otherwise: token/position
#: embeddings (vocabulary-sized row sets) and the freshly initialised task head (its random
#: pretrained vectors carry no dependency information).
DEFAULT_EXCLUDE = r"(embeddings|embed_tokens|wte|wpe|(^|\.)(classifier|score|pre_classifier|pooler|lm_head)(\.|$))"


@dataclass(frozen=True, eq=False)
class Piece:
    """A parameter seen as ``rows`` node-rows: node j of the piece takes row j of ``view``.

    ``view(t) = t.T`` when ``transpose`` (node j takes column j of a 2-D parameter, as for
    LoRA's B), else ``t.reshape(rows, -1)`` (``rows = 1``: the whole parameter is one piece).
    """

    param: nn.Parameter
    rows: int = 1
    transpose: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.param, torch.Tensor):
            raise TypeError(f"param must be a tensor/Parameter, got {type(self.param).__name__}")
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
            raise ValueError(f"rows must be a positive int, got {self.rows!r}")
        if self.transpose:
            if self.param.ndim != 2 or self.param.shape[1] != self.rows:
                raise ValueError(f"transpose=True needs a 2-D parameter with {self.rows} columns, "
                                 f"got shape {tuple(self.param.shape)}")
        elif self.param.ndim == 0 or self.param.shape[0] % self.rows or self.param.numel() == 0:
            raise ValueError(f"rows={self.rows} must divide the first dimension of the parameter "
                             f"(shape {tuple(self.param.shape)})")

    @property
    def width(self) -> int:
        """Number of entries each node takes from this piece."""
        return self.param.numel() // self.rows

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (shaped like ``param``) as a (rows, width) view: no copy."""
        return t.T if self.transpose else t.view(self.rows, -1)


@dataclass(frozen=True, eq=False)
class GraphNode:
    """Nodes of the parameter graph: a run of ``rows`` nodes sharing their pieces (one node
    when every piece has rows = 1)."""

    pieces: tuple[Piece, ...]
    name: str

    def __post_init__(self) -> None:
        if not self.pieces:
            raise ValueError(f"node {self.name!r} must have at least one piece")
        if len({p.rows for p in self.pieces}) != 1:
            raise ValueError(f"node {self.name!r}: all pieces must contribute the same number "
                             f"of rows, got {[p.rows for p in self.pieces]}")

    @property
    def rows(self) -> int:
        return self.pieces[0].rows

    @property
    def shape_key(self) -> tuple[int, ...]:
        """Nodes with equal piece widths share a block."""
        return tuple(p.width for p in self.pieces)

    @property
    def active(self) -> bool:
        return all(p.param.requires_grad for p in self.pieces)


def _stack(nodes: Sequence[GraphNode], source: Callable[[nn.Parameter], torch.Tensor | None]) -> torch.Tensor:
    """Rows = nodes: Θ (n × d) with row i = concat of node i's pieces (differentiable)."""
    parts = []
    for node in nodes:
        cols = []
        for p in node.pieces:
            t = source(p.param)
            if t is None:  # no gradient (unused in the forward pass): contributes zeros
                t = torch.zeros_like(p.param)
            cols.append(p.view(t))
        parts.append(cols[0] if len(cols) == 1 else torch.cat(cols, dim=1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


@dataclass(eq=False)
class ParameterBlock:
    """Nodes of one shape and their graph: weights ``W`` and Laplacian ``L`` (n × n)."""

    name: str
    nodes: list[GraphNode]
    W: torch.Tensor
    L: torch.Tensor

    @property
    def n_nodes(self) -> int:
        return sum(node.rows for node in self.nodes)

    @property
    def width(self) -> int:
        return sum(self.nodes[0].shape_key)

    @property
    def node_names(self) -> list[str]:
        out = []
        for node in self.nodes:
            out.extend([node.name] if node.rows == 1 else [f"{node.name}[{j}]" for j in range(node.rows)])
        return out

    def values(self) -> torch.Tensor:
        """Θ_b (n × d), differentiable in the parameters."""
        return _stack(self.nodes, lambda p: p)

    def grads(self) -> torch.Tensor:
        """G_b (n × d): stacked ``.grad`` (zeros where a parameter has none)."""
        return _stack(self.nodes, lambda p: p.grad)

    def has_grad(self) -> bool:
        return any(p.param.grad is not None for node in self.nodes for p in node.pieces)

    @torch.no_grad()
    def set_grads_(self, G: torch.Tensor) -> None:
        """Write G (n × d) back into the pieces' ``.grad`` (parameters without grad are skipped)."""
        r = 0
        for node in self.nodes:
            c = 0
            for p in node.pieces:
                w = p.width
                if p.param.grad is not None:
                    p.view(p.param.grad).copy_(G[r:r + node.rows, c:c + w])
                c += w
            r += node.rows


def _pc_nodes(model: nn.Module) -> list[GraphNode]:
    # A GraphoptModel lists its nodes (a_i, b_i) / (bias,) in its documented order.
    listed = getattr(model, "nodes", None)
    if isinstance(listed, (list, tuple)) and listed and all(hasattr(n, "params") for n in listed):
        return [GraphNode(tuple(Piece(p) for p in n.params), str(getattr(n, "name", i)))
                for i, n in enumerate(listed)]
    nodes = []
    for name, module in model.named_modules():
        fn = getattr(module, "node_parameters", None)
        if not callable(fn):
            continue
        counts: dict[str, int] = {}
        for kind, params in fn():
            i = counts.get(kind, 0)
            counts[kind] = i + 1
            nodes.append(GraphNode(tuple(Piece(p) for p in params), f"{name}.{kind}{i}"))
    return nodes


def _lora_nodes(model: nn.Module) -> list[GraphNode]:
    nodes = []
    for name, module in model.named_modules():
        A, B = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(A, nn.ModuleDict) or not isinstance(B, nn.ModuleDict):
            continue
        for adapter in A.keys():
            a, b = A[adapter].weight, B[adapter].weight  # A: r × d_in, B: d_out × r
            if a.ndim != 2 or b.ndim != 2:
                continue
            r = a.shape[0]
            nodes.append(GraphNode((Piece(b, r, transpose=True), Piece(a, r)), f"{name}.lora.{adapter}"))
    return nodes


def _row_nodes(model: nn.Module, include: str | None, exclude: str | None) -> list[GraphNode]:
    nodes = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if include is not None and not re.search(include, name):
            continue
        if exclude is not None and re.search(exclude, name):
            continue
        rows = p.shape[0] if p.ndim >= 2 else 1
        nodes.append(GraphNode((Piece(p, rows),), name))
    return nodes


def model_nodes(
    model: nn.Module,
    kind: str = "auto",
    *,
    include: str | None = None,
    exclude: str | None = DEFAULT_EXCLUDE,
) -> list[GraphNode]:
    """The nodes of ``model`` (see the module docstring); ``include``/``exclude`` are regexes
    on parameter names and apply to ``"rows"`` only."""
    if kind not in NODE_KINDS:
        raise ValueError(f"nodes must be one of {NODE_KINDS} or a list of GraphNode, got {kind!r}")
    if kind in ("auto", "pc"):
        nodes = _pc_nodes(model)
        if nodes or kind == "pc":
            if not nodes:
                raise ValueError("nodes='pc': the model has no principal-component layers "
                                 "(modules with node_parameters()); wrap it with get_graphopt_model")
            return nodes
    if kind in ("auto", "lora"):
        nodes = _lora_nodes(model)
        if nodes or kind == "lora":
            if not nodes:
                raise ValueError("nodes='lora': the model has no LoRA layers (lora_A/lora_B)")
            return nodes
    nodes = _row_nodes(model, include, exclude)
    if not nodes:
        raise ValueError("nodes='rows': no trainable parameter matches include/exclude "
                         f"(include={include!r}, exclude={exclude!r})")
    return nodes


def _block_graph(
    X: torch.Tensor,
    edges: str,
    k: int,
    signals: torch.Tensor | None,
    user_W: torch.Tensor | None,
    block_name: str,
) -> torch.Tensor:
    n = X.shape[0]
    kk = min(k, n - 1)
    if edges == "knn":
        return knn_graph(X.detach(), kk, kernel="gaussian")
    if edges == "signals":
        if signals is None:
            raise ValueError(f"edges='signals' needs signals for block {block_name!r}")
        if signals.shape[0] != n:
            raise ValueError(f"signals for block {block_name!r} have {signals.shape[0]} rows, "
                             f"the block has {n} nodes")
        return similarity_graph(signals.detach(), measure="correlation", k=kk)
    if user_W is None:
        raise ValueError(f"edges='user' needs a weight matrix for block {block_name!r}")
    if tuple(user_W.shape) != (n, n):
        raise ValueError(f"weights for block {block_name!r} must be {n} x {n}, "
                         f"got {tuple(user_W.shape)}")
    return user_W


@dataclass(eq=False)
class ParameterGraph:
    """Blocks of same-shape nodes, each with a graph; :meth:`rebuild` is cheap and schedulable.

    ``version`` increases on every rebuild so consumers (filters) know when to refresh caches.
    """

    nodes: list[GraphNode]
    edges: str = "knn"
    k: int = 10
    laplacian_kind: str = "combinatorial"
    weights: Mapping[str, torch.Tensor] | None = None
    blocks: list[ParameterBlock] = field(default_factory=list)
    version: int = 0
    _pretrained: dict[int, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.edges not in EDGE_KINDS:
            raise ValueError(f"edges must be one of {EDGE_KINDS}, got {self.edges!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if self.laplacian_kind not in ("combinatorial", "normalized"):
            raise ValueError("laplacian_kind must be 'combinatorial' or 'normalized', "
                             f"got {self.laplacian_kind!r}")
        if not self.nodes:
            raise ValueError("nodes must be a non-empty list of parameter nodes")

    def grouped(self) -> dict[str, list[GraphNode]]:
        """Active nodes grouped by shape, in first-appearance order (block name = shape)."""
        groups: dict[str, list[GraphNode]] = {}
        for node in self.nodes:
            if node.active:
                groups.setdefault("x".join(map(str, node.shape_key)), []).append(node)
        return groups

    def rebuild(self, signals: Mapping[str, torch.Tensor] | None = None) -> ParameterGraph:
        """(Re)build every block's graph from the current active nodes.

        ``knn`` uses the node vectors of :meth:`snapshot` (taken at the first build, normally
        the pretrained Θ⁰); ``signals`` needs ``signals[block_name]`` (n × T). Blocks with fewer
        than 2 nodes have no edges and are dropped.
        """
        if self._pretrained is None:
            self.snapshot()
        pre = self._pretrained
        assert pre is not None
        blocks = []
        for name, nodes in self.grouped().items():
            blk_nodes_n = sum(node.rows for node in nodes)
            if blk_nodes_n < 2:
                continue
            with torch.no_grad():
                X = _stack(nodes, lambda p: pre[id(p)])
            sig = None if signals is None else signals.get(name)
            if self.edges == "signals" and sig is None:
                continue  # no signals yet for this block: no graph, no coordination
            user_W = None if self.weights is None else self.weights.get(name)
            W = _block_graph(X, self.edges, self.k, sig, user_W, name)
            W = torch.as_tensor(W).to(device=X.device, dtype=X.dtype) if not isinstance(W, torch.Tensor) \
                else W.to(device=X.device, dtype=X.dtype)
            L = laplacian(W, self.laplacian_kind)
            blocks.append(ParameterBlock(name, nodes, W, L))
        self.blocks = blocks
        self.version += 1
        return self

    def snapshot(self) -> None:
        """Take the node vectors the k-NN kernel uses (Θ⁰): the parameters' values now.

        Taken automatically at the first build, so later rebuilds (a schedule, a selection)
        keep measuring distances between the *pretrained* vectors.
        """
        # Keyed by id(): tensors hash by identity but compare elementwise.
        self._pretrained = {}
        for node in self.nodes:
            for piece in node.pieces:
                if id(piece.param) not in self._pretrained:
                    self._pretrained[id(piece.param)] = piece.param.detach().clone()

    def active_signature(self) -> tuple[bool, ...]:
        """Which nodes are trainable now; a change means the graph should be rebuilt."""
        return tuple(node.active for node in self.nodes)

    def block_sizes(self) -> dict[str, int]:
        return {b.name: b.n_nodes for b in self.blocks}


def build_parameter_graph(
    model_or_nodes: nn.Module | Iterable[GraphNode],
    *,
    nodes: str = "auto",
    edges: str = "knn",
    k: int = 10,
    laplacian_kind: str = "combinatorial",
    weights: Mapping[str, torch.Tensor] | None = None,
    signals: Mapping[str, torch.Tensor] | None = None,
    include: str | None = None,
    exclude: str | None = DEFAULT_EXCLUDE,
) -> ParameterGraph:
    """Nodes of a model (or a user node list) and their block graphs, built now.

    ``edges="knn"`` measures distances between the parameter values at this call (kept for
    every later rebuild), so call it before training to get the pretrained-vector graph. ``weights`` (edges="user") and ``signals``
    (edges="signals") are keyed by block name (the piece widths joined by "x", e.g. "384x384").
    """
    if isinstance(model_or_nodes, nn.Module):
        node_list = model_nodes(model_or_nodes, nodes, include=include, exclude=exclude)
    else:
        node_list = list(model_or_nodes)
        if not all(isinstance(n, GraphNode) for n in node_list):
            raise TypeError("model_or_nodes must be an nn.Module or an iterable of GraphNode")
    graph = ParameterGraph(node_list, edges=edges, k=k, laplacian_kind=laplacian_kind, weights=weights)
    if edges != "signals" or signals is not None:
        graph.rebuild(signals)
    else:
        graph.snapshot()
    return graph
