"""Differentiable Dynamic Wirings (DDW: Yuan et al., ICCV 2021, §3): instance-aware connectivity.

A stage of a backbone becomes a complete DAG of its blocks. Node j aggregates the outputs of every earlier
node, weighted per sample by the routers of those nodes (eq. 3–4), transforms the sum with its block and
routes its own output to every later node; the last node only gathers. Training uses the soft threshold
``α·σ(α − τ)`` (eq. 5, learnable τ per receiving node, trained by autodiff: the paper's printed derivative,
eq. 9, is not the derivative of its own gate); inference the hard one. The per-sample adjacency matrices
(the paper's buffer M, §3.4) are an output of every stage.

Paper: K. Yuan, Q. Li, S. Guo, D. Chen, A. Zhou, F. Yu, Z. Liu, "Differentiable Dynamic Wirings for Neural
Networks", ICCV 2021 (an earlier version: https://arxiv.org/abs/2010.01097).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    channels_of,
    check_choice,
    check_int,
    count_madds,
)

WIRINGS = ("dynamic", "static", "chain")
INFERENCE_GATES = ("consistent", "paper")
AGGREGATIONS = ("adjacency", "stacked", "edges")


def _per_sample(weight):
    """(B,) edge weights → (B, 1, 1, 1), to scale (B, H, W, C) feature maps."""
    return ops.reshape(weight, (-1, 1, 1, 1))


def edge_gate(alpha, tau, training=None, inference_gate: str = "consistent"):
    """The threshold of eq. 5 applied to edge weights ``alpha`` (…) with threshold ``tau`` (broadcast).

    Training: the soft gate ``α·σ(α − τ)``. Inference: edges with ``α < τ`` are closed; an open edge keeps
    ``α·σ(α − τ)`` (``"consistent"``, the magnitude the following BatchNorm was trained with) or
    ``α`` (``"paper"``). Written with TFLite builtins (LOGISTIC, GREATER_EQUAL, SELECT_V2).
    """
    soft = alpha * ops.sigmoid(alpha - tau)
    if training:
        return soft
    value = soft if inference_gate == "consistent" else alpha
    return ops.where(ops.greater_equal(alpha, tau), value, ops.zeros_like(value))


def _edge_sum(weights, features):
    """Σ_i w_i · x_i with ``weights`` (B, n) and ``features`` n tensors (B, H, W, C)."""
    out = features[0] * _per_sample(weights[:, 0])
    for i, x in enumerate(features[1:], start=1):
        out = out + x * _per_sample(weights[:, i])
    return out


@ops.custom_gradient
def adjacency_weighted_sum(weights, *features):
    """``Σ_i w_i x_i`` whose backward pass reads only the adjacency row ``weights`` (B, n) and the node
    outputs ``features`` — tensors kept for the blocks' own backward passes anyway (DDW §3.4's buffer):
    ``∂/∂x_i = w_i·g`` and ``∂/∂w_i = Σ_{h,w,c} g·x_i``. Nothing of size (B, H, W, C) per edge is stored.
    """

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        d_weights = ops.stack([ops.sum(upstream * x, axis=(1, 2, 3)) for x in features], axis=1)
        return (d_weights, *(upstream * _per_sample(weights[:, i]) for i in range(len(features))))

    return _edge_sum(weights, features), grad


def weighted_sum(weights, features: Sequence, aggregation: str = "adjacency", training=None):
    """Node input ``x'_j = Σ_{i<j} w_{i,j} x_i`` (eq. 3) in one of three training-time forms (the same values):

    ``"adjacency"``: :func:`adjacency_weighted_sum` (custom gradient, the memory-saving form);
    ``"stacked"``: the adjacency-row contraction of the stacked predecessors, ``Σ_i (w ⊙ stack(x))_i`` —
    autodiff keeps the (B, n, H, W, C) stack of every node for the backward pass (the naive form);
    ``"edges"``: a plain Python sum of per-edge products, differentiated by autodiff.
    Inference always evaluates the per-edge sum (MUL, ADD).
    """
    if training and aggregation == "adjacency":
        return adjacency_weighted_sum(weights, *features)
    if training and aggregation == "stacked":
        stacked = ops.stack(list(features), axis=1)
        return ops.sum(stacked * ops.reshape(weights, (-1, len(features), 1, 1, 1)), axis=1)
    return _edge_sum(weights, features)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Router(keras.layers.Layer):
    """The edge router of one node (DDW eq. 4): ``α^(i,·) = σ(W_i · GAP(x^(i)) + b_i)``.

    With ``dynamic=False`` it is the static-α ablation of Table 6: ``α = σ(b_i)``, learned but the same for
    every sample (no GAP, no FC). The bias starts at ``bias_init`` (+3, σ = 0.953: Fig. 3's best, edges
    start open); W starts at zero (the paper does not give it), so every sample starts with the same α.

    Args:
        edges: ζ_out(i), the number of outgoing edges of the node (≥ 1).
        dynamic: per-sample routing (True) or one learned weight per edge (False).
        bias_init: initial bias b_i.

    Input/output: (B, H, W, C) → (B, edges) edge weights in (0, 1).
    MAdds: C·edges (dynamic), 0 (static).
    """

    def __init__(self, edges: int, dynamic: bool = True, bias_init: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.edges = check_int("edges", edges)
        self.dynamic = bool(dynamic)
        if not isinstance(bias_init, (int, float)) or isinstance(bias_init, bool) or not math.isfinite(bias_init):
            raise ValueError(f"`bias_init` must be a finite number, got {bias_init!r}.")
        self.bias_init = float(bias_init)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Router takes (B, H, W, C) feature maps, got shape {input_shape}.")
        channels = channels_of(input_shape, "Router")
        if self.dynamic:
            self.kernel = self.add_weight(shape=(channels, self.edges), initializer="zeros", name="kernel")
        self.bias = self.add_weight(
            shape=(self.edges,), initializer=keras.initializers.Constant(self.bias_init), name="bias"
        )

    def call(self, inputs):
        if self.dynamic:
            logits = ops.matmul(ops.mean(inputs, axis=(1, 2)), self.kernel) + self.bias
        else:
            logits = ops.broadcast_to(self.bias, (ops.shape(inputs)[0], self.edges))
        return ops.sigmoid(logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.edges)

    def compute_madds(self, input_shape) -> int:
        return int(input_shape[-1]) * self.edges if self.dynamic else 0

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "dynamic": self.dynamic, "bias_init": self.bias_init}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WiredStage(keras.layers.Layer):
    """A backbone stage as a complete DAG of its blocks with per-sample edge weights (DDW §3.1–3.4).

    With blocks B_0 … B_{n−1} (B_0 may change stride and channels, the others keep the shape) the graph has
    n + 1 nodes: node 0 is ``x^(0) = B_0(x)`` (the input node: it only distributes), node j = 1 … n−1 is
    ``x^(j) = B_j(Σ_{i<j} ψ(α^(i,j)) x^(i))`` (eq. 3: the block keeps its own residual around the aggregate),
    node n (the output node) is ``Σ_{i<n} ψ(α^(i,n)) x^(i)``. Node i's :class:`Router` gives α^(i,j) for its
    n − i outgoing edges from its own output (eq. 4). ψ is :func:`edge_gate` with τ_j, a learnable threshold
    of the receiving node j (eq. 5). With the chain edges α^(j−1,j) at 1 and the others closed, the stage is
    the static chain B_{n−1}(…B_0(x)) exactly.

    Args:
        blocks: the n ≥ 1 blocks in order (Keras layers, e.g. ``ResNetBlock``, ``InvertedResidual``).
        wiring: ``"dynamic"`` (DDW), ``"static"`` (static-α ablation of Table 6: learned, input-independent
            edges) or ``"chain"`` (the original network: no routers, the blocks in sequence).
        bias_init: initial router bias (+3: edges start open, σ(3) = 0.953).
        threshold_init: initial τ of every receiving node (the paper gives none; 0).
        inference_gate: ``"consistent"`` (open edges keep α·σ(α − τ)) or ``"paper"`` (open edges keep α);
            see :func:`edge_gate`.
        aggregation: training-time form of the weighted sums: ``"adjacency"`` (custom gradient that keeps
            only the adjacency rows, the paper's memory saving), ``"stacked"`` (naive) or ``"edges"``; see
            :func:`weighted_sum`. The values are the same; only peak training memory differs.

    Input: (B, H, W, C_in). Outputs: ``[y (B, H', W', C), adjacency (B, n + 1, n + 1)]``, where
    ``adjacency[b, j, i]`` is the weight of edge i → j used for sample b (strictly lower-triangular; 0 = closed
    edge). MAdds: the blocks, the routers (C per edge) and one multiply per element and edge.
    """

    def __init__(
        self,
        blocks: Sequence[keras.layers.Layer],
        wiring: str = "dynamic",
        bias_init: float = 3.0,
        threshold_init: float = 0.0,
        inference_gate: str = "consistent",
        aggregation: str = "adjacency",
        **kwargs,
    ):
        super().__init__(**kwargs)
        blocks = list(blocks) if isinstance(blocks, (list, tuple)) else blocks
        if not isinstance(blocks, list) or not blocks or not all(isinstance(b, keras.layers.Layer) for b in blocks):
            raise ValueError(f"`blocks` must be a non-empty list of Keras layers, got {blocks!r}.")
        self.blocks = blocks
        self.wiring = check_choice("wiring", wiring, WIRINGS)
        self.inference_gate = check_choice("inference_gate", inference_gate, INFERENCE_GATES)
        self.aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
        if not isinstance(threshold_init, (int, float)) or isinstance(threshold_init, bool):
            raise ValueError(f"`threshold_init` must be a number, got {threshold_init!r}.")
        self.threshold_init = float(threshold_init)
        self.bias_init = float(bias_init)
        n = len(blocks)
        self.routers = (
            []
            if self.wiring == "chain"
            else [
                Router(n - i, dynamic=self.wiring == "dynamic", bias_init=bias_init, name=f"router{i}")
                for i in range(n)
            ]
        )

    @property
    def nodes(self) -> int:
        """Nodes of the graph: one per block plus the output node."""
        return len(self.blocks) + 1

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"WiredStage takes (B, H, W, C) inputs, got shape {input_shape}.")
        channels_of(input_shape, "WiredStage")
        self.input_shape_ = tuple(input_shape)
        if not self.blocks[0].built:  # deserialized blocks arrive built
            self.blocks[0].build(tuple(input_shape))
        shape = tuple(self.blocks[0].compute_output_shape(tuple(input_shape)))
        for block in self.blocks[1:]:
            if not block.built:
                block.build(shape)
            out = tuple(block.compute_output_shape(shape))
            if out[1:] != shape[1:]:
                raise ValueError(
                    f"`blocks`: every block after the first must keep the shape {shape[1:]} (the "
                    f"nodes' outputs are added), but {block.name} gives {out[1:]}."
                )
        self.node_shape = shape
        for router in self.routers:
            router.build(shape)
        if self.wiring != "chain":
            self.threshold = self.add_weight(
                shape=(len(self.blocks),),
                name="threshold",
                initializer=keras.initializers.Constant(self.threshold_init),
            )

    def call(self, inputs, training=None):
        x = self.blocks[0](inputs, training=training)
        if self.wiring == "chain":
            for block in self.blocks[1:]:
                x = block(x, training=training)
            chain = [[1.0 if i == j - 1 else 0.0 for i in range(self.nodes)] for j in range(self.nodes)]
            return [
                x,
                ops.broadcast_to(ops.convert_to_tensor(chain, x.dtype), (ops.shape(x)[0], self.nodes, self.nodes)),
            ]
        n = len(self.blocks)
        nodes, alphas, rows = [x], [self.routers[0](x)], []
        for j in range(1, n + 1):
            # α^(i,j) is column j − i − 1 of node i's router output (its edges go to i + 1 … n).
            alpha = ops.stack([alphas[i][:, j - i - 1] for i in range(j)], axis=1)
            weights = edge_gate(alpha, self.threshold[j - 1], training, self.inference_gate)
            rows.append(ops.pad(weights, [[0, 0], [0, self.nodes - j]]))
            aggregate = weighted_sum(weights, nodes, self.aggregation, training)
            if j == n:
                x = aggregate
            else:
                nodes.append(self.blocks[j](aggregate, training=training))
                alphas.append(self.routers[j](nodes[-1]))
        adjacency = ops.stack([ops.zeros_like(rows[0]), *rows], axis=1)
        return [x, adjacency]

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            shape = tuple(block.compute_output_shape(shape))
        return [shape, (input_shape[0], self.nodes, self.nodes)]

    def edge_count(self) -> int:
        """Edges of the complete DAG: n(n + 1)/2 (0 for the chain wiring, which has no aggregation)."""
        return 0 if self.wiring == "chain" else len(self.blocks) * (len(self.blocks) + 1) // 2

    def overhead_madds(self, input_shape) -> int:
        """MAdds DDW adds to the blocks: the routers and one multiply per element and edge (additions free)."""
        if not self.built:
            self.build(input_shape)
        routers = sum(count_madds(router, self.node_shape) for router in self.routers)
        return int(routers + self.edge_count() * math.prod(self.node_shape[1:]))

    def compute_madds(self, input_shape) -> int:
        if not self.built:
            self.build(input_shape)
        blocks = count_madds(self.blocks[0], tuple(input_shape))
        blocks += sum(count_madds(block, self.node_shape) for block in self.blocks[1:])
        return int(blocks + self.overhead_madds(input_shape))

    def get_config(self):
        return {
            **super().get_config(),
            "blocks": [keras.saving.serialize_keras_object(b) for b in self.blocks],
            "wiring": self.wiring,
            "bias_init": self.bias_init,
            "threshold_init": self.threshold_init,
            "inference_gate": self.inference_gate,
            "aggregation": self.aggregation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["blocks"] = [keras.saving.deserialize_keras_object(b) for b in config["blocks"]]
        return cls(**config)
