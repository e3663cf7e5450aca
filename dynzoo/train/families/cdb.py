"""How CDB-ResNets train (CDB §3.2.2, §3.3): the category, execution-rate and FLOPs-ratio losses, the
trainer that adds them to ``fit`` (eq. 15), the gate logger and the ``dynzoo train`` hook of the ``cdb``
family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from dynzoo._compat import compiled_loss
from dynzoo.layers.base import check_int
from dynzoo.models.cdb import (
    GateCosts,
    GateReport,
    analyze_gates,
    cdb_blocks,
    cdb_config,
    check_target_rate,
    force_gates,
    gate_costs,
    gate_model,
)
from dynzoo.train.hooks import TrainingSetup, register_training_hook


def stage_category_weights(stages: Sequence[int], stage1_weight: float, growth: float) -> np.ndarray:
    """α_l of every controller: ``stage1_weight · growth^(stage − 1)`` (paper: 1e-4, ×10 per stage)."""
    return np.array([stage1_weight * growth ** (s - 1) for s in stages], dtype="float32")


class CategoryLoss:
    """``L_ctg = Σ_l α_l CE(k, p_l)`` (eqs. 7–8): cross-entropy of each controller's category head against
    the coarse category of the label.

    Args:
        category_map: (classes,) class → category (see :func:`dynzoo.data.categories.category_map`).
        weights: (blocks,) α_l.

    Call with ``(y_true, category_logits (B, blocks, K))``; ``y_true`` integer labels (B,) or one-hot /
    smoothed / mixed class targets (B, classes), mapped to category targets by a matrix product.
    """

    def __init__(self, category_map: np.ndarray, weights: Sequence[float]):
        from dynzoo.data.categories import category_matrix

        self.matrix = category_matrix(np.asarray(category_map))
        self.weights = np.asarray(weights, dtype="float32")

    def __call__(self, y_true, category_logits):
        classes = self.matrix.shape[0]
        if len(y_true.shape) == 1 or y_true.shape[-1] == 1:
            y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes)
        target = ops.matmul(ops.cast(y_true, "float32"), self.matrix)  # (B, K)
        log_p = ops.log_softmax(category_logits, axis=-1)  # (B, blocks, K)
        ce = -ops.sum(target[:, None, :] * log_p, axis=-1)  # (B, blocks)
        return ops.sum(ops.mean(ce, axis=0) * self.weights)


class ExecutionRateLoss:
    """``L_exec = Σ_l (e − z_l)²`` (eqs. 10–11); z_l = the fraction of block l's groups on in the batch.

    Args:
        target: e in (0, 1]. Call with gates (B, blocks, N).
    """

    def __init__(self, target: float):
        self.target = check_target_rate("target", target)

    def __call__(self, gates):
        return ops.sum(ops.square(self.target - ops.mean(gates, axis=(0, 2))))


class FlopsRatioLoss:
    """``L_flops = (f / f_total − r)²`` (eqs. 12–13) with f the batch mean of each sample's executed MAdds,
    ``f = f_static + Σ_l Σ_n s_{l,n} f_{l,n}`` (the static part is included so that f / f_total can reach 1).

    Args:
        target: r in (0, 1].
        costs: the network's :class:`GateCosts`. Call with gates (B, blocks, N).
    """

    def __init__(self, target: float, costs: GateCosts):
        self.target = check_target_rate("target", target)
        self.group = (costs.group / costs.total).astype("float32")
        self.static = costs.static / costs.total

    def ratio(self, gates):
        """Per-sample f / f_total (B,)."""
        return self.static + ops.sum(ops.sum(gates, axis=-1) * self.group, axis=-1)

    def __call__(self, gates):
        return ops.square(ops.mean(self.ratio(gates)) - self.target)


class CDBTrainer(keras.Model):
    """Trains a CDB network with ``fit`` on ``α1·L_ctg + α2·(L_exec + L_flops) + α3·L_cls`` (eq. 15, all α = 1).

    Wraps a network built by :func:`CDBResNet` (weights shared: train the trainer, deploy the network) and
    adds the training-only category heads (one Dense(K) on each controller's hidden state, dropped after
    training). ``L_cls`` is the compiled loss (the trainer's recipe loss with its weight decay; plain
    cross-entropy when compiled without a loss). Reports ``loss``, ``category_loss``, ``exec_loss``,
    ``flops_loss``, ``exec_rate`` and ``flops_ratio`` (of the training gates, noise included), plus the
    compiled metrics. Save the network, not the trainer.

    Args:
        network: the CDB network (``include_top=True``; its logits are the ``classifier`` layer's output).
        target_rate: r = e in (0, 1]; None: no resource losses.
        category_map: (classes,) class → category; None: no category loss.
        category_weight: α of the stage-1 controllers (×``growth`` per stage; default the config's 1e-4, ×10).
        growth: the per-stage factor.
    """

    def __init__(
        self,
        network: keras.Model,
        target_rate: float | None = None,
        category_map=None,
        category_weight: float | None = None,
        growth: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.graph = gate_model(network, outputs="logits", hidden=True)
        self.costs = gate_costs(network)
        blocks = cdb_blocks(network)
        self.exec_loss = self.flops_loss = self.category_loss = None
        self.ratio = FlopsRatioLoss(1.0, self.costs)  # its per-sample ratio, for the log
        if target_rate is not None:
            self.exec_loss = ExecutionRateLoss(target_rate)
            self.flops_loss = FlopsRatioLoss(target_rate, self.costs)
        self.heads = []
        if category_map is not None:
            from dynzoo.data.categories import category_map as check_map

            cmap = check_map(category_map, network.output_shape[-1])
            defaults = cdb_config()["category_loss"]
            weight = defaults["stage1_weight"] if category_weight is None else category_weight
            growth = defaults["growth"] if growth is None else growth
            for label, value in (("category_weight", weight), ("growth", growth)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"`{label}` must be a number >= 0, got {value!r}.")
            self.category_loss = CategoryLoss(cmap, stage_category_weights(self.costs.stages, weight, growth))
            self.heads = [keras.layers.Dense(int(cmap.max()) + 1, name=f"category_{b.name}") for b in blocks]
            for head, block in zip(self.heads, blocks, strict=False):
                head.build((None, block.hidden))  # before compile, so the optimizer knows their variables
        names = (["category_loss"] if self.category_loss else []) + (
            ["exec_loss", "flops_loss"] if self.exec_loss else []
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names + ["exec_rate", "flops_ratio"]}

    def call(self, inputs, training=None):
        logits, gates, hidden = self.graph(inputs, training=training)
        if not self.heads:
            return [logits, gates]
        categories = ops.stack([head(hidden[:, i]) for i, head in enumerate(self.heads)], axis=1)
        return [logits, gates, categories]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, gates = y_pred[0], y_pred[1]
        if compiled_loss(self) is None:
            classes = logits.shape[-1]
            target = (
                y
                if len(y.shape) == 2 and y.shape[-1] == classes
                else ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), classes)
            )
            loss = ops.mean(keras.losses.categorical_crossentropy(target, logits, from_logits=True))
            if self.losses:
                loss = loss + ops.sum(self.losses)
        else:
            loss = super().compute_loss(x, y, logits, sample_weight, training)
        terms = {}
        if self.category_loss is not None:
            terms["category_loss"] = self.category_loss(y, y_pred[2])
        if self.exec_loss is not None:
            terms["exec_loss"] = self.exec_loss(gates)
            terms["flops_loss"] = self.flops_loss(gates)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
            loss = loss + value
        self.trackers["exec_rate"].update_state(ops.mean(gates))
        self.trackers["flops_ratio"].update_state(self.ratio.ratio(gates))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        super().compute_metrics(x, y, y_pred[0], sample_weight)
        return self.get_metrics_result()


class GateLogger(keras.callbacks.Callback):
    """At the end of every ``every``-th epoch, run the network on ``images`` in inference mode and log the
    execution rate and FLOPs ratio, overall and per stage: ``logs["inference_flops_ratio"]``,
    ``logs["inference_exec_rate"]``, ``logs["inference_stage<s>_exec_rate"]``,
    ``logs["inference_stage<s>_flops_ratio"]`` (the gates executed at inference on these images; the
    trainer's own ``exec_rate``/``flops_ratio`` are those of the noisy training gates). Reports are kept in
    ``self.reports``.

    Args:
        images: inputs (a few hundred are enough).
        network: the CDB network (default: the model being trained, or its ``network``).
        every: epochs between two reports (≥ 1).
        verbose: print the per-stage table.
    """

    def __init__(self, images: np.ndarray, network: keras.Model | None = None, every: int = 1, verbose: int = 0):
        super().__init__()
        self.images, self.network = np.asarray(images), network
        self.every = check_int("every", every)
        self.verbose = verbose
        self.reports: dict[int, GateReport] = {}
        self._gated = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        network = self.network or getattr(self.model, "network", self.model)
        if self._gated is None:  # built once: its inference function is traced once
            self._gated = gate_model(network)
        report = analyze_gates(network, self.images, gated=self._gated)
        self.reports[epoch] = report
        if logs is not None:
            logs["inference_flops_ratio"] = report.flops_ratio
            logs["inference_exec_rate"] = report.execution_rate
            for stage, figures in report.stage_figures().items():
                logs[f"inference_stage{stage}_exec_rate"] = figures["execution_rate"]
                logs[f"inference_stage{stage}_flops_ratio"] = figures["flops_ratio"]
        if self.verbose:
            print(
                f"\nepoch {epoch + 1}: FLOPs ratio {report.flops_ratio:.3f}, execution rate "
                f"{report.execution_rate:.3f}\n{report.stage_table()}"
            )


TRAINING_OPTIONS = {
    "target_flops": (
        float,
        ("CDB: target FLOPs ratio r = execution rate e in (0, 1] (adds the execution-rate and FLOPs losses)"),
    ),
    "category_map": (
        str,
        (
            "CDB: class -> coarse category map for the controllers' category loss: 'cifar100', "
            "'digits' or a JSON file (a list, one category per class)"
        ),
    ),
    "category_weight": (float, ("CDB: category-loss weight of the stage-1 controllers, x10 per stage (default 1e-4)")),
    "all_groups_on": (
        bool,
        ("CDB: train with every group on and the controllers frozen (the static multi-branch baseline)"),
    ),
}


def prepare_training(network, options: dict[str, Any], context):
    """The ``dynzoo train`` hook of the CDB family: a :class:`CDBTrainer` with the given losses, a
    :class:`GateLogger` on the context's test images, and the measured FLOPs ratio in the summary; with
    ``all_groups_on`` the network itself with every gate forced on."""
    options = dict(options)
    if not options.pop("all_groups_on", False):
        if not options:
            return TrainingSetup(model=network, network=network)
        if "target_flops" in options:
            check_target_rate("target_flops", options["target_flops"])
        if "category_weight" in options and "category_map" not in options:
            raise ValueError("training option `category_weight` needs `category_map` (the category loss it weighs).")
        model = CDBTrainer(
            network,
            options.get("target_flops"),
            options.get("category_map"),
            options.get("category_weight"),
            name=f"{network.name}_trainer",
        )
    elif options:
        raise ValueError(f"training option `all_groups_on` trains without gating; it excludes {sorted(options)}.")
    else:
        force_gates(network, 1)
        for block in cdb_blocks(network):
            block.controller.trainable = False
        model = network
    images = np.asarray(context.sample_images)

    def report(net) -> dict[str, Any]:
        gates = analyze_gates(net, images)
        return {
            "flops_ratio": gates.flops_ratio,
            "execution_rate": gates.execution_rate,
            "stages": gates.stage_figures(),
            "effective_mmadds": float(gates.madds.mean() / 1e6),
            "all_on_mmadds": gates.costs.total / 1e6,
            "gate_images": len(images),
        }

    callbacks = [GateLogger(images, network, verbose=int(context.verbose == 2))] if len(images) else []
    return TrainingSetup(model=model, network=network, callbacks=callbacks, report=report if len(images) else None)


register_training_hook("cdb", TRAINING_OPTIONS, prepare_training)
