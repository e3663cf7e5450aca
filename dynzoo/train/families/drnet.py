"""How DRNets train (DRNets §3.4): the resource term of eq. 8, the trainer that adds it to ``fit``, the
two-stage schedule, the branch-usage logger and the ``dynzoo train`` hook of the ``drnet`` family."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dynzoo._compat import compiled_loss
from dynzoo.layers.base import check_int
from dynzoo.layers.routing import GumbelTemperatureSchedule, routed_layers, set_routing
from dynzoo.models.drnet import RoutingReport, analyze_routing, branch_cost_table, routing_model
from dynzoo.train.hooks import TrainingContext, TrainingSetup, register_training_hook


def resource_loss(logits, labels, weights, costs):
    """The resource term of eq. 8 per sample: ``1[ŷ = y] · log Σ_l Σ_c Σ_b w̃_{l,c,b} R_{l,c,b}``.

    Args:
        logits: (B, classes); ŷ = argmax, the indicator is a constant (no gradient).
        labels: (B,) integer labels.
        weights: (B, cells, connections, ops) branch weights (Gumbel-softmax in training).
        costs: (cells, connections, ops) branch MAdds R (any unit: the log makes the gradient unit-free).
    """
    correct = ops.cast(
        ops.equal(ops.argmax(logits, axis=-1), ops.cast(ops.reshape(labels, (-1,)), "int64")), weights.dtype
    )
    expected = ops.sum(weights * ops.cast(costs, weights.dtype), axis=(1, 2, 3))
    return ops.stop_gradient(correct) * ops.log(expected + 1e-6)


class ResourceAwareTrainer(keras.Model):
    """Trains a DRNet with ``model.fit`` on ``classification loss + resource_weight · resource term``
    (DRNets eq. 8).

    Wraps a DRNet built by :func:`DRNet` (the weights are shared: train the trainer, deploy the DRNet).
    ``compile`` defaults to sparse cross-entropy and accuracy on integer labels; any classification loss and
    metrics given to ``compile`` apply to the logits (one-hot labels work too: the resource term takes their
    argmax). ``fit``/``evaluate`` also report ``ce`` (the classification loss), ``resource`` and
    ``expected_mmadds`` (the Gumbel-weighted routed MAdds, in millions). The routed-branch costs R are the
    DRNet's own MAdds per branch; the static parts are left out of the log as in the paper. Save the
    network, not the trainer.

    Args:
        network: the DRNet (``include_top=True``).
        resource_weight: λ ≥ 0 (0 in pre-training; the paper's DRNet-R-λ uses 0.1 on CIFAR-10, 0.01 on
            ImageNet); a variable, so :class:`ResourceWeightSchedule` can switch it on for fine-tuning
            without recompiling.
    """

    def __init__(self, network: keras.Model, resource_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(resource_weight, (int, float)) and resource_weight >= 0):
            raise ValueError(f"`resource_weight` must be a number >= 0, got {resource_weight!r}.")
        self.network = network
        self.resource_weight = keras.Variable(float(resource_weight), trainable=False, name="resource_weight")
        self.graph = routing_model(network, outputs="logits")
        self.costs = branch_cost_table(network).astype("float32") / 1e6
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.resource_tracker = keras.metrics.Mean(name="resource")
        self.mmadds_tracker = keras.metrics.Mean(name="expected_mmadds")

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if metrics is None else metrics
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        return self.graph(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, weights = y_pred
        ce = compiled_loss(self)(y, logits, sample_weight)
        one_hot = len(y.shape) == 2 and y.shape[-1] == logits.shape[-1] and y.shape[-1] > 1
        labels = ops.argmax(y, axis=-1) if one_hot else ops.reshape(y, (-1,))
        resource = resource_loss(logits, labels, weights, self.costs)
        self.ce_tracker.update_state(ce)
        self.resource_tracker.update_state(resource)
        self.mmadds_tracker.update_state(ops.sum(weights * self.costs, axis=(1, 2, 3)))
        loss = ce + self.resource_weight * ops.mean(resource)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[0], sample_weight)


class ResourceWeightSchedule(keras.callbacks.Callback):
    """The paper's two stages in one ``fit``: λ = 0 before ``start_epoch`` (pre-training), then ``weight``
    (fine-tuning with the resource term). For a :class:`ResourceAwareTrainer`.

    Args:
        weight: λ of stage 2 (≥ 0).
        start_epoch: first epoch of stage 2 (≥ 0).
    """

    def __init__(self, weight: float, start_epoch: int = 0):
        super().__init__()
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"`weight` must be a number >= 0, got {weight!r}.")
        self.weight = float(weight)
        self.start_epoch = check_int("start_epoch", start_epoch, minimum=0)

    def on_epoch_begin(self, epoch, logs=None):
        if not isinstance(self.model, ResourceAwareTrainer):
            raise ValueError("ResourceWeightSchedule trains a ResourceAwareTrainer.")
        self.model.resource_weight.assign(self.weight if epoch >= self.start_epoch else 0.0)


class BranchUsageLogger(keras.callbacks.Callback):
    """At the end of every ``every``-th epoch, route ``images`` in inference mode and log the branch
    usage: ``logs["usage_<op>"]`` (fraction of connections selecting each branch, all cells),
    ``logs["madds_ratio"]`` (mean effective / all-branch MAdds), and with ``verbose`` the per-cell table.
    The reports are kept in ``self.reports`` (epoch → :class:`RoutingReport`).

    Args:
        images: inputs to route (a few hundred are enough).
        network: the DRNet (default: the model being trained, or its ``network`` for a trainer).
        every: epochs between two reports (≥ 1).
        verbose: print the per-cell table.
    """

    def __init__(self, images: np.ndarray, network: keras.Model | None = None, every: int = 1, verbose: int = 0):
        super().__init__()
        self.images, self.network = np.asarray(images), network
        self.every = check_int("every", every)
        self.verbose = verbose
        self.reports: dict[int, RoutingReport] = {}
        self._routed = None

    def routed_model(self) -> keras.Model:
        """The network's :func:`routing_model`, built (and its predict function traced) once, for every
        report of this logger and for whoever analyses the same network after training."""
        if self._routed is None:
            self._routed = routing_model(self.network or getattr(self.model, "network", self.model))
        return self._routed

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        network = self.network or getattr(self.model, "network", self.model)
        report = analyze_routing(network, self.images, routed=self.routed_model())
        self.reports[epoch] = report
        if logs is not None:
            for op, usage in zip(report.ops, report.masks.mean(axis=(0, 1, 2)), strict=False):
                logs[f"usage_{op}"] = float(usage)
            logs["madds_ratio"] = report.madds_ratio
        if self.verbose:
            print(
                f"\nepoch {epoch + 1}: effective MAdds {report.madds_ratio:.1%} of all branches\n{report.usage_table()}"
            )


def prepare_drnet_training(network: keras.Model, options: dict, context: TrainingContext) -> TrainingSetup:
    """How ``dynzoo train`` trains a DRNet: the paper's two stages in one run (§3.4). The first half of
    the epochs pre-trains at Gumbel temperature 3 without the resource term; the second half restarts τ
    at 1, decays it to 0.5, and adds the resource term with weight ``resource_weight`` (default 0). The
    inference threshold ``routing_threshold`` (default: the network's, 1.0 = every branch) is set before
    training, so validation, the saved model and the summary's MAdds ratio use it. Branch usage is logged
    each epoch."""
    threshold = options.get("routing_threshold")
    weight = options.get("resource_weight", 0.0)
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"`routing_threshold` must be a number in (0, 1], got {threshold!r}.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"`resource_weight` must be a number >= 0, got {weight!r}.")
    set_routing(network, threshold=threshold)
    stage1 = context.epochs // 2
    stage2 = context.epochs - stage1
    floor = 0.5
    callbacks = [
        GumbelTemperatureSchedule(
            initial=3.0, hold_epochs=stage1, restart=1.0, decay=floor ** (1 / max(stage2 - 1, 1)), floor=floor
        ),
        ResourceWeightSchedule(weight, start_epoch=stage1),
    ]
    usage = BranchUsageLogger(context.sample_images, network=network)
    callbacks.append(usage)

    def report(trained: keras.Model) -> dict:
        # the logger's routing model when it is the same network: tracing another one costs as much again
        routed = usage.routed_model() if trained is network else None
        routing = analyze_routing(trained, context.sample_images, routed=routed)
        return {
            "routing_threshold": round(float(routed_layers(trained)[0].threshold.numpy()), 4),
            "madds_ratio_on_sample": round(routing.madds_ratio, 4),
            "sample_images": len(context.sample_images),
        }

    return TrainingSetup(ResourceAwareTrainer(network), network, callbacks, report)


register_training_hook(
    "drnet",
    {
        "routing_threshold": (float, "inference routing threshold T in (0, 1] (1: every branch)"),
        "resource_weight": (float, "weight of the resource loss in the second half of the epochs (0: off)"),
    },
    prepare_drnet_training,
)
