"""``PerturbationEncoder``: a learnable embedding per gene, message passing over a multigraph, one row per gene.

>>> enc = PerturbationEncoder(graph, genes=["TP53", "NOVEL1"], kind="gatv2", dim=64, layers=2, heads=2)
>>> Z = enc()                          # (V, 64), V = graph nodes + genes absent from the graph
>>> Z[enc.index(["TP53", "NOVEL1"])]   # the rows of two perturbations

Kinds (see each body's docstring for equations): ``gat``, ``gatv2``, ``exphormer`` (union graph),
``exphormer-mg``, ``gat-hybrid``, ``gat-mlg``, ``hybrid-bmp`` (provenance-aware multigraph encoders).
"""

from __future__ import annotations

import inspect
import os
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from gnn.backends import Backend, get_backend
from gnn.effects import EffectInputs
from gnn.kinds.multigraph import BMPBody, HybridBody, MLGBody
from gnn.kinds.single import ExphormerBody, GATBody
from gnn.kinds.spec import EncoderSpec
from gnn.layers.linear import Linear
from kgbuild.graph import MultiGraph

#: kind -> (body class, fixed keyword arguments)
NODE_INPUTS = ("effects", "id")


class EncoderOutput(NamedTuple):
    """One encoder pass: ``Z`` (V, d); with ``node_inputs="effects"`` also the prior codes ``prior`` (V, r) and
    ``visible`` (V,) bool (own code used), else ``None`` for both."""

    Z: Tensor
    prior: Tensor | None = None
    visible: Tensor | None = None


KINDS: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "gat": (GATBody, {"conv": "gat"}),
    "gatv2": (GATBody, {"conv": "gatv2"}),
    "exphormer": (ExphormerBody, {"by_layer": False}),
    "exphormer-mg": (ExphormerBody, {"by_layer": True}),
    "gat-hybrid": (HybridBody, {}),
    "gat-mlg": (MLGBody, {}),
    "hybrid-bmp": (BMPBody, {}),
}


class PerturbationEncoder(nn.Module):
    r"""Embeds every gene of a vocabulary with a GNN over a :class:`~kgbuild.graph.MultiGraph`.

    Vocabulary: the graph's nodes in graph order, then the genes of ``genes`` that are absent from the
    graph, in the order given (``V`` entries in all). The input ``H^0 \in R^{V \times dim}`` is

    * ``node_inputs="effects"`` (the default of ``txpert train``): ``H^0 = F W + b``, a linear map of the
      effect features ``F (V, F)`` of :class:`gnn.effects.EffectInputs` -- each gene's own observed training
      effect (when visible) and the weighted mean effect of its trained in-neighbours, per layer. A gene never
      perturbed in training still gets an informative row from its neighbourhood. The codes are set by the
      caller (:meth:`set_effects`); until then every gene looks unseen.
    * ``node_inputs="id"``: a learnable embedding per gene (``N(0, 1)`` init). An unseen gene's row is never
      trained, so its output is mostly noise (kept for comparison).

    The body (``kind``) maps ``H^0`` to ``Z = \mathrm{enc}() \in R^{V \times dim}``. Absent genes receive no
    messages: they pass only through the self / residual path of each layer.

    Args:
        graph: the multigraph (all layers are used; multigraph kinds use the layer of every edge).
        genes: genes that need a row (e.g. a dataset's perturbations); those not in ``graph`` are appended.
        kind: one of :data:`KINDS`.
        dim: embedding and hidden width ``d`` (divisible by ``heads``).
        layers: number of message-passing layers.
        heads: attention heads (each ``dim // heads`` wide, concatenated).
        dropout: dropout on attention weights and layer outputs.
        backend: ``"auto"`` (DGL when importable, else PyG), ``"dgl"``, ``"pyg"`` or a Backend instance.
        use_edge_weight: feed each edge's weight to the attention as an edge feature.
        unknown_token: give the encoder one shared learnable input row ``u \in R^{dim}`` (zero init) that
            replaces the own input row of every gene not marked known (:meth:`set_known`) and of the genes
            hidden in a call (``forward(hide=...)``):
            ``H^0_i = E_i`` if ``i`` is known and not hidden, else ``u``. A gene without training signal then
            enters the GNN as "some gene" rather than as its random initial row, so its output is driven by
            its neighbourhood -- the situation of an unseen perturbation. Off by default.
        node_inputs: ``"effects"`` or ``"id"`` (above).
        code_dim: ``r``, the width of the effect codes (``node_inputs="effects"``).
        gene_dim: ``K``, the width of a per-gene feature table (``node_inputs="effects"``; 0: none), set with
            :meth:`set_gene_features`.
        **kind_options: passed to the kind's body, e.g. ``expander_degree``, ``num_virtual``, ``seed`` for
            the Exphormer kinds; ``add_self_loops`` for ``gat``/``gatv2``; ``conv`` for ``gat-hybrid``.
    """

    def __init__(self, graph: MultiGraph, genes: Sequence[str] | None = None, kind: str = "gat", dim: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.0, backend: str | Backend = "auto",
                 use_edge_weight: bool = True, unknown_token: bool = False, node_inputs: str = "id",
                 code_dim: int = 16, gene_dim: int = 0, **kind_options):
        super().__init__()
        if not isinstance(graph, MultiGraph):
            raise TypeError(f"graph must be a kgbuild MultiGraph, got {type(graph).__name__}")
        if kind not in KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}; choose one of {', '.join(KINDS)}")
        if dim < 1 or layers < 0 or heads < 1:
            raise ValueError(f"need dim >= 1, layers >= 0, heads >= 1; got dim={dim}, layers={layers}, heads={heads}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if node_inputs not in NODE_INPUTS:
            raise ValueError(f"node_inputs must be one of {', '.join(NODE_INPUTS)}, got {node_inputs!r}")
        if unknown_token and node_inputs != "id":
            raise ValueError("unknown_token replaces learned ID rows: it needs node_inputs='id'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        lookup = graph.node_lookup
        absent = [g for g in dict.fromkeys(genes or []) if g not in lookup]
        self.vocab: list[str] = graph.nodes.tolist() + absent
        self._index = {g: i for i, g in enumerate(self.vocab)}
        self.kind = kind
        self.dim = dim
        self.num_graph_nodes = graph.num_nodes
        self.layer_names = graph.layer_names
        self.backend = get_backend(backend)
        body_cls, fixed = KINDS[kind]
        allowed = set(inspect.signature(body_cls.__init__).parameters) - {"self", "spec"} - set(fixed)
        unknown = sorted(set(kind_options) - allowed)
        if unknown:
            raise TypeError(f"kind {kind!r} takes no option(s) {', '.join(unknown)}; it accepts: {', '.join(sorted(allowed)) or 'none'}")
        spec = EncoderSpec(graph=graph, num_nodes=len(self.vocab), dim=dim, layers=layers, heads=heads,
                           dropout=dropout, use_edge_weight=use_edge_weight)
        self.node_inputs = node_inputs
        if node_inputs == "id":
            self.embedding = nn.Embedding(len(self.vocab), dim)
            nn.init.normal_(self.embedding.weight)
            self.effects = None
        else:
            self.embedding = None
            self.effects = EffectInputs(graph, len(self.vocab), code_dim, gene_dim)
            self.input_proj = Linear(self.effects.dim, dim)
        self.unknown = nn.Parameter(torch.zeros(dim)) if unknown_token else None
        # which rows use their own input embedding (set_known); not saved in checkpoints: callers set it
        self.register_buffer("known", torch.ones(len(self.vocab), dtype=torch.bool), persistent=False)
        self.body = body_cls(spec, **fixed, **kind_options)

    @classmethod
    def from_file(cls, path: str | os.PathLike, genes: Sequence[str] | None = None, restrict: bool = False,
                  **kwargs) -> "PerturbationEncoder":
        """Load a ``.kg.npz`` multigraph and build the encoder on it.

        With ``restrict=True`` the graph is first cut to the subgraph induced on ``genes`` (genes absent from
        the file still get isolated rows); by default the whole graph is kept, so messages can also pass
        through genes that are not perturbed. Unreadable files raise :class:`kgbuild.graph.GraphFileError`.
        """
        graph = MultiGraph.load(path)
        if restrict:
            if genes is None:
                raise ValueError("restrict=True needs the genes to restrict the graph to")
            graph = graph.restrict(genes)
        return cls(graph, genes=genes, **kwargs)

    @property
    def num_nodes(self) -> int:
        """``V``: vocabulary size (rows of the output)."""
        return len(self.vocab)

    def set_known(self, genes: Sequence[str] | None) -> None:
        """Mark the genes whose own input row is used (``None``: all); the others get the shared ``unknown``
        row. Genes outside the vocabulary are ignored. Needs ``unknown_token=True``."""
        if self.unknown is None:
            raise ValueError("set_known needs an encoder built with unknown_token=True")
        known = torch.ones_like(self.known) if genes is None else torch.zeros_like(self.known)
        if genes is not None:
            rows = [self._index[g] for g in genes if g in self._index]
            known[torch.tensor(rows, dtype=torch.long, device=known.device)] = True
        self.known.copy_(known)

    def _table(self, genes: Sequence[str], values: Tensor) -> tuple[Tensor, Tensor]:
        """``values`` (n, k) of ``genes`` as a vocabulary table ``(V, k)`` (zeros elsewhere) and its ``(V,)``
        bool row mask; genes outside the vocabulary are ignored."""
        values = torch.as_tensor(values, dtype=torch.float32)
        full = torch.zeros(self.num_nodes, values.shape[1])
        present = torch.zeros(self.num_nodes, dtype=torch.bool)
        pairs = [(self._index[g], k) for k, g in enumerate(genes) if g in self._index]
        if pairs:
            rows = torch.tensor([a for a, _ in pairs], dtype=torch.long)
            full[rows] = values[torch.tensor([b for _, b in pairs], dtype=torch.long)]
            present[rows] = True
        return full, present

    def set_effects(self, genes: Sequence[str], codes: Tensor, mean_code: Tensor) -> None:
        """The observed effect codes ``codes`` (n, r) of ``genes`` (n names; genes outside the vocabulary are
        ignored) and the mean code ``mean_code`` (r,); every other gene has none. Needs ``node_inputs="effects"``."""
        if self.effects is None:
            raise ValueError("set_effects needs an encoder built with node_inputs='effects'")
        self.effects.set_codes(*self._table(genes, codes), torch.as_tensor(mean_code, dtype=torch.float32))

    def set_gene_features(self, genes: Sequence[str], features: Tensor) -> None:
        """Per-gene features ``features`` (n, K) of ``genes`` (n names; others in the vocabulary get none)."""
        if self.effects is None:
            raise ValueError("set_gene_features needs an encoder built with node_inputs='effects'")
        self.effects.set_gene_features(*self._table(genes, features))

    def encode(self, hide: Tensor | None = None) -> EncoderOutput:
        """One pass: ``Z`` (V, dim), row ``i`` embedding ``vocab[i]``, and (``node_inputs="effects"``) the prior
        codes and visibility of :class:`gnn.effects.EffectInputs`.

        ``hide``: optional bool ``(V,)``; those genes' own inputs are hidden in this call (training-time
        self-masking: the model must embed them from their neighbourhood): their effect codes
        (``node_inputs="effects"``), or their ID rows, replaced by the ``unknown`` row (``unknown_token``).
        """
        if self.effects is not None:
            eff = self.effects(self.backend, hide)
            return EncoderOutput(self.body(self.input_proj(eff.features), self.backend), eff.prior, eff.visible)
        h = self.embedding.weight
        if self.unknown is not None:
            keep = self.known if hide is None else self.known & ~hide.to(self.known.device)
            h = torch.where(keep.unsqueeze(1), h, self.unknown.to(h.dtype).expand_as(h))
        elif hide is not None:
            raise ValueError("hide needs an encoder built with unknown_token=True or node_inputs='effects'")
        return EncoderOutput(self.body(h, self.backend))

    def forward(self, hide: Tensor | None = None) -> Tensor:
        """``Z`` of shape ``(V, dim)``: row ``i`` embeds ``vocab[i]`` (see :meth:`encode`)."""
        return self.encode(hide).Z

    def index(self, genes: Sequence[str]) -> Tensor:
        """Rows of ``genes`` in ``Z`` (LongTensor on the module's device); KeyError names unknown genes."""
        if isinstance(genes, str):
            genes = [genes]
        missing = [g for g in genes if g not in self._index]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
            raise KeyError(f"gene(s) not in the encoder vocabulary: {shown}; pass them in genes= when building the encoder")
        return torch.tensor([self._index[g] for g in genes], dtype=torch.long, device=self.known.device)

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, vocab={self.num_nodes} ({self.num_graph_nodes} in graph), dim={self.dim}, "
                f"layers={self.layer_names}, inputs={self.node_inputs!r}, backend={self.backend.name!r}")
