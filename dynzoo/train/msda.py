"""Multi-source domain adaptation (thesis ch. 6, eqs. 6.6–6.8): ``L = L_ce(sources) + λ·L_d(sources, target)``.

The labelled source domains are pooled (no domain labels are needed) and every step also sees an
unlabelled target batch. The alignment loss L_d acts on the features the classifier reads:

* ``"mmd"``: multi-kernel Gaussian maximum mean discrepancy between source and target features;
* ``"adversarial"``: a domain discriminator (source vs target) trained through a gradient-reversal layer,
  so the feature extractor learns to fool it (DANN);
* ``"none"``: source only.

``dynzoo train --task msda --model drt_lenet --dataset digits --source-domains clean,inverted
--target-domain noisy --alignment mmd --alignment-weight 1`` runs :func:`train_msda`; domains are names of
:mod:`dynzoo.data.domains` (``clean`` is the untransformed digits, ``night+fog`` chains two transforms).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from dynzoo._compat import compiled_loss
from dynzoo.train.hooks import TrainingSetup

ALIGNMENTS = ("mmd", "adversarial", "none")
DEFAULTS = {
    "source_domains": "clean,inverted,colour_background,rotated",
    "target_domain": "noisy",
    "alignment": "mmd",
    "alignment_weight": 1.0,
}
OPTIONS = {
    "source_domains": (
        str,
        (
            "msda: comma-separated labelled source domains of dynzoo.data.domains "
            f"('clean' = no transform, 'a+b' chains transforms); default {DEFAULTS['source_domains']}"
        ),
    ),
    "target_domain": (
        str,
        (f"msda: the unlabelled target domain (evaluated on its test split); default {DEFAULTS['target_domain']}"),
    ),
    "alignment": (str, f"msda: alignment loss, one of {list(ALIGNMENTS)}; default {DEFAULTS['alignment']}"),
    "alignment_weight": (float, f"msda: λ of L_ce + λ·L_d; default {DEFAULTS['alignment_weight']}"),
}


def parse_domain(text: str) -> tuple[str, ...]:
    """``"clean"`` → ``()``, ``"night+fog"`` → ``("night", "fog")`` (checked against the transforms)."""
    from dynzoo.data.domains import CLEAN, check_domain

    text = text.strip()
    return check_domain(text if text == CLEAN else tuple(text.split("+")))


def mmd_loss(source, target, scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)):
    """Squared MMD with a sum of Gaussian kernels ``exp(−‖a − b‖² / (s·σ²))``, σ² the mean pairwise squared
    distance of the joint batch (not differentiated), biased estimator."""
    joint = ops.concatenate([source, target], axis=0)
    sq = ops.sum(joint * joint, axis=1)
    dist = ops.maximum(sq[:, None] + sq[None, :] - 2.0 * ops.matmul(joint, ops.transpose(joint)), 0.0)
    sigma2 = ops.stop_gradient(ops.mean(dist)) + 1e-8
    kernel = sum(ops.exp(-dist / (s * sigma2)) for s in scales)
    n = ops.shape(source)[0]
    k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return ops.mean(k_ss) + ops.mean(k_tt) - 2.0 * ops.mean(k_st)


def gradient_reversal(x, scale: float = 1.0):
    """Identity forward, gradient multiplied by −``scale`` backward (the GRL of DANN)."""
    return ops.stop_gradient((1.0 + scale) * x) - scale * x


def feature_tensor(network: keras.Model):
    """The features the classifier reads: the input of the layer named ``classifier`` (of the dropout
    before it, if any)."""
    try:
        node = network.get_layer("classifier").input
    except ValueError:
        raise ValueError(f"{network.name} has no layer named 'classifier' (build it with include_top=True).") from None
    producer = node._keras_history.operation
    return producer.input if isinstance(producer, keras.layers.Dropout) else node


class MSDATrainer(keras.Model):
    """Trains ``network`` (logits out) with ``fit`` on ``((source_images, target_images), source_labels)``
    batches: compiled classification loss on the source logits + ``weight``·alignment of source and target
    features. Metrics apply to the source logits; ``fit`` also reports ``ce`` and ``alignment``. Source and
    target run as one batch, so BatchNorm sees both domains. Save the network, not the trainer.

    Args:
        network: a classifier with a layer named ``classifier`` (logits, no activation).
        alignment: "mmd", "adversarial" or "none".
        weight: λ ≥ 0.
        discriminator_units: hidden width of the adversarial domain discriminator.
    """

    def __init__(
        self,
        network: keras.Model,
        alignment: str = "mmd",
        weight: float = 1.0,
        discriminator_units: int = 128,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if alignment not in ALIGNMENTS:
            raise ValueError(f"`alignment` must be one of {list(ALIGNMENTS)}, got {alignment!r}.")
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"`alignment_weight` must be a number >= 0, got {weight!r}.")
        self.network = network
        self.alignment = alignment
        self.weight = float(weight)
        self.graph = keras.Model(network.inputs, [network.outputs[0], feature_tensor(network)])
        self.discriminator = None
        if alignment == "adversarial":
            self.discriminator = keras.Sequential(
                [keras.layers.Dense(discriminator_units, activation="relu"), keras.layers.Dense(1)],
                name="domain_discriminator",
            )
            # built now, so an optimizer built from trainable_variables before the first step covers it
            self.discriminator.build(self.graph.outputs[1].shape)
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.alignment_tracker = keras.metrics.Mean(name="alignment")

    def call(self, inputs, training=None):
        source, target = inputs
        n = ops.shape(source)[0]
        logits, features = self.graph(ops.concatenate([source, target], axis=0), training=training)
        return logits[:n], features[:n], features[n:]

    def alignment_loss(self, source_features, target_features):
        if self.alignment == "mmd":
            return mmd_loss(source_features, target_features)
        if self.alignment == "adversarial":
            joint = gradient_reversal(ops.concatenate([source_features, target_features], axis=0))
            domain = ops.concatenate(
                [ops.zeros((ops.shape(source_features)[0], 1)), ops.ones((ops.shape(target_features)[0], 1))], axis=0
            )
            return ops.mean(keras.losses.binary_crossentropy(domain, self.discriminator(joint), from_logits=True))
        return ops.zeros(())

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """The classification loss and metrics apply to the source logits (default: cross-entropy on
        integer labels, accuracy)."""
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if metrics is None else metrics
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, source_features, target_features = y_pred
        ce = compiled_loss(self)(y, logits, sample_weight)
        align = self.alignment_loss(source_features, target_features)
        self.ce_tracker.update_state(ce)
        self.alignment_tracker.update_state(align)
        loss = ce + self.weight * align
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[0], sample_weight)


def msda_dataset(source_images, source_labels, target_images, batch_size: int, classes: int, seed: int = 0):
    """An endless ``((source, target), one-hot source labels)`` stream, each side shuffled on its own."""
    import tensorflow as tf

    source = tf.data.Dataset.from_tensor_slices(
        (np.asarray(source_images, "float32"), np.eye(classes, dtype="float32")[np.asarray(source_labels)])
    )
    target = tf.data.Dataset.from_tensor_slices(np.asarray(target_images, "float32"))
    source = source.shuffle(len(source_images), seed=seed).repeat().batch(batch_size, drop_remainder=True)
    target = target.shuffle(len(target_images), seed=seed + 1).repeat().batch(batch_size, drop_remainder=True)
    return tf.data.Dataset.zip(source, target).map(lambda s, t: ((s[0], t), s[1])).prefetch(2)


def domain_arrays(domains: Sequence[tuple[str, ...]], split: str, image_size: int, seed: int = 0):
    """The digits ``split`` under every domain, concatenated: (images uint8, labels int32)."""
    from dynzoo.data.domains import domain_digits

    parts = [domain_digits(d, split, image_size, seed=seed + i) for i, d in enumerate(domains)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def train_msda(config) -> Any:
    """``dynzoo train --task msda``: adapt ``config.model`` from the source domains to the target domain
    (``config.options``: ``source_domains``, ``target_domain``, ``alignment``, ``alignment_weight``; other
    family options are refused: their losses are not composed with the alignment loss). Only the offline
    ``digits`` dataset has domains.
    Writes ``model.keras`` and ``summary.json`` (source and target test top-1) into ``model_dir``."""
    from dynzoo.registry import get_entry
    from dynzoo.train.hooks import check_options
    from dynzoo.train.trainer import (
        TrainResult,
        build_model,
        compile_for_recipe,
        resolve_recipe,
        run_folder,
    )

    if config.dataset != "digits":
        raise ValueError(f"`dataset`: --task msda runs on the offline 'digits' domains, got {config.dataset!r}.")
    options = {**DEFAULTS, **{k: v for k, v in config.options.items() if k in OPTIONS}}
    others = sorted(k for k in config.options if k not in OPTIONS)
    check_options(get_entry(config.model).family, {k: config.options[k] for k in others})
    if others:
        raise ValueError(
            f"training option(s) {', '.join(f'`{k}`' for k in others)} cannot be combined with "
            "--task msda (it trains with source cross-entropy + alignment only)."
        )
    sources = [parse_domain(d) for d in options["source_domains"].split(",") if d.strip()]
    if not sources:
        raise ValueError("`source_domains` must name at least one domain.")
    target = parse_domain(options["target_domain"])
    if target in sources:
        raise ValueError(f"`target_domain` {options['target_domain']!r} is also a source domain.")
    recipe, _ = resolve_recipe(config)
    model_dir = run_folder(config, label="msda")

    keras.utils.set_random_seed(config.seed)
    size = recipe.input_size
    source_x, source_y = domain_arrays(sources, "train", size)
    target_x, _ = domain_arrays([target], "train", size, seed=len(sources))
    classes = int(source_y.max()) + 1
    steps = config.steps_per_epoch or len(source_x) // recipe.batch_size
    network = build_model(config, recipe, classes)
    trainer = MSDATrainer(network, options["alignment"], options["alignment_weight"])
    base_loss = compile_for_recipe(trainer, recipe, recipe.lr, steps, classes)
    started = time.perf_counter()
    fit = trainer.fit(
        msda_dataset(source_x, source_y, target_x, recipe.batch_size, classes, config.seed),
        epochs=recipe.epochs,
        steps_per_epoch=steps,
        verbose=config.verbose,
    )
    seconds = time.perf_counter() - started
    summary = {
        "model": config.model,
        "task": "msda",
        "dataset": config.dataset,
        "recipe": recipe.as_dict(),
        **{k: options[k] for k in OPTIONS},
        "epochs": recipe.epochs,
        "steps_per_epoch": steps,
        "params": network.count_params(),
        "train_seconds": round(seconds, 1),
        "source_test_top1": domain_accuracy(network, sources, size),
        "target_test_top1": domain_accuracy(network, [target], size, seed=len(sources)),
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    network.compile(loss=base_loss, metrics=["accuracy"])
    network.save(model_dir / "model.keras")
    (model_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if config.verbose:
        print(json.dumps({k: summary[k] for k in ("source_test_top1", "target_test_top1")}), flush=True)
    return TrainResult(network, summary, {k: list(v) for k, v in fit.history.items()}, model_dir)


def domain_accuracy(network, domains, image_size: int, seed: int = 0) -> float:
    """Top-1 of ``network`` on the test split of ``domains`` (pooled)."""
    images, labels = domain_arrays(domains, "test", image_size, seed=seed)
    logits = network.predict(images.astype("float32"), batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def prepare_plain(network, options: dict, context) -> TrainingSetup:
    """The DRT family's hook outside ``--task msda``: the network trains as it is; the MSDA options are refused."""
    if options:
        raise ValueError(f"training options {sorted(options)} belong to multi-source adaptation: add `--task msda`.")
    return TrainingSetup(model=network, network=network)
