"""Dynamic Routing Networks (DRNets: Cai, Shu, Wang, WACV 2021): DRNet cells, DRNet(S/M/L) for
32×32 inputs and DRNet(L) on the DARTS ImageNet stem, the resource-aware training of §3.4 and the
per-sample routing analysis (decisions and effective MAdds).

Paper: S. Cai, Y. Shu, W. Wang, "Dynamic Routing Networks", WACV 2021, https://arxiv.org/abs/1905.04849.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from dynzoo.config import load_config
from dynzoo.layers.base import (
    PACKAGE,
    batchnorm,
    channels_of,
    check_int,
    conv_initializer,
    count_madds,
    dense_initializer,
)
from dynzoo.layers.conv import SymmetricConv2D
from dynzoo.layers.routing import (
    PAPER_OPS,
    CandidateOp,
    FactorizedReduce,
    ReLUConvBN,
    RouterNet,
    check_ops,
    gumbel_softmax,
    routed_layers,
    threshold_select,
)
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    no_official_checkpoint,
    register_family,
)

# Node i (2…5) reads x_{i−1} and x0 or x1 (§3.1); node 2 reads x0 and x1.
DEFAULT_NODE_INPUTS = ((0, 1), (2, 0), (3, 1), (4, 0))


def check_node_inputs(node_inputs) -> tuple[tuple[int, int], ...]:
    """Validate the wiring: node ``2 + i`` reads two distinct earlier states (0, 1 = the cell inputs)."""
    try:
        wiring = tuple((int(a), int(b)) for a, b in node_inputs)
    except (TypeError, ValueError):
        raise ValueError(f"`node_inputs` must be pairs of state indices, got {node_inputs!r}.") from None
    if not wiring:
        raise ValueError("`node_inputs` must name the inputs of at least one node.")
    for i, (a, b) in enumerate(wiring):
        node = i + 2
        if a == b or not (0 <= a < node and 0 <= b < node):
            raise ValueError(
                f"`node_inputs`: node {node} must read two distinct states among 0…{node - 1}, got {(a, b)}."
            )
    return wiring


def _shape(x) -> tuple:
    return tuple(x.shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DRNetCell(keras.layers.Layer):
    """A DRNet cell with per-sample branch routing (DRNets §3.1–3.3, eq. 1–4, 7).

    The inputs x0, x1 (outputs of the two preceding cells) are preprocessed to C channels (ReLU-Conv1×1-BN;
    :class:`FactorizedReduce` for x0 after a reduction cell). Node i sums its connections,
    ``x_i = Σ_{j∈I_i} Σ_b w̃_{c(j,i),b} F_b(x_j)`` (eq. 2); the cell outputs concat(x_2 … x_{N+1}).
    A :class:`RouterNet` gives logits w (B, connections, ops) from the preprocessed x0, x1. Training:
    ``w̃ = softmax((w + g)/τ)`` with Gumbel noise g (eq. 4), every branch computed. Inference: ``p =
    softmax(w/τ)``, then :func:`threshold_select` keeps the most important branches up to mass T,
    renormalised (eq. 7); with ``conditional`` a branch that no sample of the batch selects is not computed
    (a ``cond`` per branch: at batch 1 exactly the selected branches run).

    Inputs: ``[x0 (B, H0, W0, C0), x1 (B, H, W, C1)]`` (H0 = 2H after a reduction cell).
    Outputs: ``[y (B, H', W', N·C), weights (B, connections, ops)]`` — H' = H/2 in a reduction cell; the
    weights are the ones used: Gumbel-softmax in training, the renormalised selection at inference (zero =
    not computed). They are the inspectable routing decisions.

    Args:
        channels: C, the width of every node.
        reduction: a reduction cell: the connections that read x0 or x1 have stride 2.
        reduction_prev: the previous cell halved the resolution (x1's size is x0's halved, rounded up).
        node_inputs: for each intermediate node 2, 3, …, the two states it reads (0, 1 = the cell inputs).
        ops: the candidate branches of every connection (names of ``CANDIDATE_OPS``).
        temperature: τ of the (Gumbel-)softmax; a non-trainable variable the schedule changes.
        threshold: T of inference routing, in (0, 1]; a non-trainable variable (1 = all branches).
        conditional: at inference skip the branches no sample selects (False: compute all, mask by 0).
        seed: seed of the Gumbel noise.
    """

    def __init__(
        self,
        channels: int,
        reduction: bool = False,
        reduction_prev: bool = False,
        node_inputs: Sequence[Sequence[int]] = DEFAULT_NODE_INPUTS,
        ops: Sequence[str] = PAPER_OPS,
        temperature: float = 1.0,
        threshold: float = 0.8,
        conditional: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = check_int("channels", channels, minimum=2)
        self.reduction, self.reduction_prev = bool(reduction), bool(reduction_prev)
        self.node_inputs = check_node_inputs(node_inputs)
        self.ops = check_ops(ops)
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
        if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
            raise ValueError(f"`threshold` must be in (0, 1], got {threshold!r}.")
        self.initial_temperature, self.initial_threshold = float(temperature), float(threshold)
        self.conditional = bool(conditional)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.sources = [src for pair in self.node_inputs for src in pair]
        c = self.channels
        self.pre0 = FactorizedReduce(c, name="pre0") if self.reduction_prev else ReLUConvBN(c, name="pre0")
        self.pre1 = ReLUConvBN(c, name="pre1")
        self.router = RouterNet(len(self.sources), len(self.ops), name="router")
        self.branches = [
            [CandidateOp(op, c, 2 if self.reduction and src < 2 else 1, name=f"conn{k}_{op}") for op in self.ops]
            for k, src in enumerate(self.sources)
        ]

    def _check_inputs(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(f"DRNetCell takes the outputs of the two preceding cells [x0, x1], got {input_shape}.")
        shape0, shape1 = input_shape
        channels_of(shape0, "DRNetCell")
        channels_of(shape1, "DRNetCell")
        factor = 2 if self.reduction_prev else 1
        for a, b in zip(shape0[1:3], shape1[1:3], strict=False):
            if a is not None and b is not None and (a + factor - 1) // factor != b:
                raise ValueError(
                    f"DRNetCell: x1's size must be x0's divided by {factor}, rounded up "
                    f"(`reduction_prev`={self.reduction_prev}), got shapes {shape0} and {shape1}."
                )

    def _state_shapes(self, input_shape) -> list[tuple]:
        """Shapes of the preprocessed inputs and of the nodes."""
        batch, h, w, _ = input_shape[1]
        inputs = [(batch, h, w, self.channels)] * 2
        if self.reduction:
            h, w = (None if d is None else (d + 1) // 2 for d in (h, w))
        return inputs + [(batch, h, w, self.channels)] * len(self.node_inputs)

    def build(self, input_shape):
        self._check_inputs(input_shape)
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
            name="temperature",
        )
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_threshold), trainable=False, name="threshold"
        )
        self.pre0.build(input_shape[0])
        self.pre1.build(input_shape[1])
        states = self._state_shapes(input_shape)
        self.router.build(states[:2])
        for src, branches in zip(self.sources, self.branches, strict=False):
            for op in branches:
                op.build(states[src])

    def routing_weights(self, logits, training=None):
        """The branch weights for ``logits`` (B, connections, ops) — see the class docstring."""
        if training:
            return gumbel_softmax(logits, self.temperature, self.seed_generator)
        weights, _ = threshold_select(ops.softmax(logits / self.temperature, axis=-1), self.threshold)
        return weights

    def _connection(self, k: int, x, weights, skip_unselected: bool, training=None):
        out = None
        for b, op in enumerate(self.branches[k]):
            w = weights[:, b]
            scale = ops.reshape(w, (-1, 1, 1, 1))
            if skip_unselected:
                y = ops.cond(
                    ops.any(ops.greater(w, 0.0)),
                    lambda op=op, scale=scale: scale * op(x, training=False),
                    lambda op=op: self._zeros(op, x),
                )
            else:
                y = scale * op(x, training=training)
            out = y if out is None else out + y
        return out

    def _zeros(self, op: CandidateOp, x):
        shape = ops.shape(x)
        return ops.zeros(
            (
                shape[0],
                (shape[1] + op.strides - 1) // op.strides,
                (shape[2] + op.strides - 1) // op.strides,
                self.channels,
            ),
            dtype=x.dtype,
        )

    def call(self, inputs, training=None):
        x0, x1 = inputs
        states = [self.pre0(x0, training=training), self.pre1(x1, training=training)]
        logits = self.router(states, training=training)
        weights = self.routing_weights(logits, training)
        skip_unselected = self.conditional and not training
        k = 0
        for pair in self.node_inputs:
            node = None
            for src in pair:
                y = self._connection(k, states[src], weights[:, k, :], skip_unselected, training)
                node = y if node is None else node + y
                k += 1
            states.append(node)
        return [ops.concatenate(states[2:], axis=-1), weights]

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)
        batch, h, w, _ = self._state_shapes(input_shape)[-1]
        return [(batch, h, w, self.channels * len(self.node_inputs)), (batch, len(self.sources), len(self.ops))]

    def branch_madds(self, input_shape) -> np.ndarray:
        """MAdds of every branch of every connection for one sample: (connections, ops)."""
        states = self._state_shapes(input_shape)
        return np.array(
            [
                [count_madds(op, states[src]) for op in branches]
                for src, branches in zip(self.sources, self.branches, strict=False)
            ],
            dtype="int64",
        )

    def compute_madds(self, input_shape) -> int:
        """MAdds with every branch computed (preprocessing, RouterNet and all connections)."""
        states = self._state_shapes(input_shape)
        static = count_madds(self.pre0, input_shape[0]) + count_madds(self.pre1, input_shape[1])
        return int(static + count_madds(self.router, states[:2]) + self.branch_madds(input_shape).sum())

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "reduction": self.reduction,
            "reduction_prev": self.reduction_prev,
            "node_inputs": [list(p) for p in self.node_inputs],
            "ops": list(self.ops),
            "temperature": self.initial_temperature,
            "threshold": self.initial_threshold,
            "conditional": self.conditional,
            "seed": self.seed,
        }


def drnet_config(model_name: str) -> dict:
    return load_config("drnet")["models"][model_name]


def cell_plan(cells: int, channels: int, wiring_seed: int) -> list[dict]:
    """Per cell: channels, reduction flag and wiring (reductions at ⌊L/3⌋ and ⌊2L/3⌋, channels doubled)."""
    rng = random.Random(wiring_seed)
    reductions = {cells // 3, 2 * cells // 3}
    plan, c = [], channels
    for i in range(cells):
        if i in reductions:
            c *= 2
        wiring = [(0, 1)] + [(node - 1, rng.randrange(2)) for node in range(3, 6)]
        plan.append({"channels": c, "reduction": i in reductions, "node_inputs": wiring})
    return plan


def DRNet(
    model_name: str,
    input_shape: Sequence[int | None] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float | None = None,
    name: str | None = None,
    *,
    threshold: float | None = None,
    temperature: float | None = None,
    conditional: bool = True,
    cells: int | None = None,
    channels: int | None = None,
) -> keras.Model:
    """Build a DRNet (``model_name`` one of ``drnet_s``, ``drnet_m``, ``drnet_l`` for 32×32 inputs, or
    ``drnet_l_imagenet``): stem → L DRNet cells → GAP → linear classifier (DRNets §3.1, §4.1).

    Args:
        input_shape: (H, W, 3); default (32, 32, 3), (224, 224, 3) for ImageNet. H and W must be
            multiples of 4 (of 32 on the ImageNet stem).
        include_top: keep the classifier.
        weights: None or the path of Keras ``.weights.h5`` weights (no pretrained DRNet is published).
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the last cell's map), "avg" or "max".
        classes: classes of the top; default 10 (CIFAR-10), 1000 on the ImageNet stem.
        classifier_activation: applied to the logits (layer ``logits``); None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and normalises it (ImageNet mean/std).
        dropout_rate: dropout before the classifier (default 0).
        name: model name; default ``model_name``.
        threshold: T of inference routing (default 0.8, the paper's tables; 1 = all branches).
        temperature: τ at inference (default the schedule's floor: 0.5 CIFAR, 0.8 ImageNet); training
            changes it through :class:`~dynzoo.layers.routing.GumbelTemperatureSchedule`.
        conditional: skip unselected branches in inference (False: compute every branch, mask by 0).
        cells: L, to build a custom-size DRNet (default the named model's).
        channels: C of the first cell, to build a custom-width DRNet (default the named model's).
    """
    if model_name not in load_config("drnet")["models"]:
        raise ValueError(f"`model_name` must be one of {list(load_config('drnet')['models'])}, got {model_name!r}.")
    cfg = dict(drnet_config(model_name))
    if cells is not None:
        cfg["cells"] = check_int("cells", cells)
    if channels is not None:
        cfg["channels"] = check_int("channels", channels, minimum=2)
    imagenet = cfg["stem"] == "imagenet"
    classes = (1000 if imagenet else 10) if classes is None else classes
    height, width, channels = check_application_args(
        model_name=model_name,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        default_size=cfg["default_size"],
        min_size=32 if imagenet else 8,
    )
    dropout_rate = 0.0 if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")
    threshold = cfg["threshold"] if threshold is None else threshold
    temperature = cfg["temperature"] if temperature is None else temperature

    inputs, x = model_input((height, width, channels), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(channels)(x)
    c = cfg["channels"]
    if imagenet:
        x = SymmetricConv2D(c // 2, 3, 2, use_bias=False, kernel_initializer=conv_initializer(), name="stem0_conv1")(x)
        x = batchnorm(name="stem0_bn1")(x)
        x = keras.layers.ReLU(name="stem0_relu")(x)
        x = SymmetricConv2D(c, 3, 2, use_bias=False, kernel_initializer=conv_initializer(), name="stem0_conv2")(x)
        s0 = batchnorm(name="stem0_bn2")(x)
        x = keras.layers.ReLU(name="stem1_relu")(s0)
        x = SymmetricConv2D(c, 3, 2, use_bias=False, kernel_initializer=conv_initializer(), name="stem1_conv")(x)
        s1 = batchnorm(name="stem1_bn")(x)
    else:
        x = keras.layers.Conv2D(
            cfg["stem_multiplier"] * c,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=conv_initializer(),
            name="stem_conv",
        )(x)
        s0 = s1 = batchnorm(name="stem_bn")(x)
    reduction_prev = imagenet
    for index, cell in enumerate(cell_plan(cfg["cells"], c, cfg["wiring_seed"])):
        out, _ = DRNetCell(
            cell["channels"],
            cell["reduction"],
            reduction_prev,
            cell["node_inputs"],
            load_config("drnet")["ops"],
            temperature=temperature,
            threshold=threshold,
            conditional=conditional,
            seed=index,
            name=f"cell{index}",
        )([s0, s1])
        s0, s1, reduction_prev = s1, out, cell["reduction"]
    x = s1
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = keras.layers.Dense(classes, kernel_initializer=dense_initializer(), name="logits")(x)
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=no_official_checkpoint("DRNets"),
    )


# ----------------------------------------------------------------------------------------------------
# Routing analysis: decisions and effective MAdds per sample.


def drnet_cells(model: keras.Model) -> list[DRNetCell]:
    cells = [layer for layer in routed_layers(model) if isinstance(layer, DRNetCell)]
    if not cells:
        raise ValueError(f"`model` {model.name!r} has no DRNet cells.")
    return cells


def _input_shapes(layer: keras.layers.Layer):
    inp = layer.input
    return [_shape(t) for t in inp] if isinstance(inp, (list, tuple)) else _shape(inp)


def all_branch_madds(model: keras.Model) -> int:
    """MAdds of one sample with every branch computed (the profiler's convention)."""
    return int(
        sum(
            count_madds(layer, _input_shapes(layer))
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        )
    )


def branch_cost_table(model: keras.Model) -> np.ndarray:
    """(cells, connections, ops) MAdds of every branch of every cell of ``model`` for one sample."""
    return np.stack([cell.branch_madds(_input_shapes(cell)) for cell in drnet_cells(model)])


def routing_model(model: keras.Model, outputs: str = "predictions") -> keras.Model:
    """A model sharing ``model``'s layers that also returns the routing weights of every cell.

    Outputs ``[y, weights (B, cells, connections, ops)]``; ``y`` is the model's output (``outputs=
    "predictions"``) or the ``logits`` layer's. A weight of 0 means the branch was not computed.
    """
    cells = drnet_cells(model)
    if outputs not in ("predictions", "logits"):
        raise ValueError(f"`outputs` must be 'predictions' or 'logits', got {outputs!r}.")
    y = model.outputs[0] if outputs == "predictions" else model.get_layer("logits").output
    per_cell = [
        keras.layers.Reshape((1, *cell.output[1].shape[1:]), name=f"{cell.name}_routing")(cell.output[1])
        for cell in cells
    ]
    weights = keras.layers.Concatenate(axis=1, name="routing")(per_cell) if len(per_cell) > 1 else per_cell[0]
    return keras.Model(model.inputs, [y, weights], name=f"{model.name}_routing")


@dataclass(frozen=True)
class RoutingReport:
    """Per-sample routing of a DRNet on a set of inputs.

    Attributes:
        outputs: (N, …) the model's outputs.
        masks: (N, cells, connections, ops) bool, the selected (computed) branches.
        madds: (N,) effective MAdds of each sample (static parts + the selected branches).
        all_branch_madds: MAdds with every branch.
        ops: the branch names.
    """

    outputs: np.ndarray
    masks: np.ndarray
    madds: np.ndarray
    all_branch_madds: int
    ops: tuple[str, ...]

    @property
    def madds_ratio(self) -> float:
        """Mean effective MAdds over all-branch MAdds."""
        return float(self.madds.mean() / self.all_branch_madds)

    def usage(self) -> np.ndarray:
        """(cells, ops): the fraction of connections × samples that select each branch, per cell."""
        return self.masks.mean(axis=(0, 2))

    def usage_table(self) -> str:
        rows = ["| cell | " + " | ".join(self.ops) + " |", "|---" * (len(self.ops) + 1) + "|"]
        rows += [f"| {i} | " + " | ".join(f"{u:.2f}" for u in usage) + " |" for i, usage in enumerate(self.usage())]
        return "\n".join(rows)


def effective_madds(masks: np.ndarray, costs: np.ndarray, all_branch: int) -> np.ndarray:
    """Effective MAdds per sample: all-branch MAdds minus the branches that ``masks`` leaves out."""
    return all_branch - ((1 - masks.astype("int64")) * costs[None]).sum(axis=(1, 2, 3))


def analyze_routing(
    model: keras.Model, images: np.ndarray, batch_size: int = 64, verbose: int = 0, routed: keras.Model | None = None
) -> RoutingReport:
    """Run ``model`` (inference mode) on ``images`` and report each sample's routing and effective MAdds.

    ``routed``: ``routing_model(model)``, built once by a caller that analyses repeatedly (e.g. for several
    thresholds), so that its inference function is traced once.
    """
    routed = routing_model(model) if routed is None else routed
    outputs, weights = routed.predict(np.asarray(images), batch_size=batch_size, verbose=verbose)
    masks = weights > 0
    total = all_branch_madds(model)
    return RoutingReport(
        outputs, masks, effective_madds(masks, branch_cost_table(model), total), total, drnet_cells(model)[0].ops
    )


BUILDERS = register_family(
    "drnet",
    DRNet,
    load_config("drnet")["models"],
    describe=lambda _, config: f"{config['description']} (Cai et al., WACV 2021)",
    function_name=lambda name: "DRNet" + "".join(part.capitalize() for part in name[len("drnet_") :].split("_")),
    summary=lambda name, _: f"{name} (DRNets §3.5)",
)
# keras.applications-style functions, as keras.applications.MobileNetV3Small
DRNetS, DRNetM, DRNetL, DRNetLImagenet = (BUILDERS[f"drnet_{size}"] for size in ("s", "m", "l", "l_imagenet"))
