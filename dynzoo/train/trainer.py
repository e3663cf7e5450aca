"""Train a registered model on a dataset with a recipe: Keras ``fit`` with callbacks, resumable."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynzoo._compat import all_layers
from dynzoo.train.distribute import STRATEGIES

LR_SCALINGS = ("linear", "none")
# ``--task`` name → "module:function" taking a TrainConfig and returning a TrainResult.
TASKS = {
    "classify": "dynzoo.train.trainer:train_classifier",
    "msda": "dynzoo.train.msda:train_msda",
    "domains": "dynzoo.train.domains:train_domains",
}


@dataclass
class TrainConfig:
    """Everything a training run needs besides the recipe's hyper-parameters.

    Attributes:
        model: registered model name (``dynzoo list``).
        dataset: ``digits`` (offline), ``folder`` or a TensorFlow Datasets name.
        data_dir: the dataset's folder (``folder``: ``data_dir/<split>/<class>/<image>``; TFDS: its data dir).
        manual_dir: TFDS manual download folder (``imagenet2012``'s archives).
        check_images: decode every image of a folder dataset before training and name the ones that
            fail; None: for folders of up to ``CHECK_IMAGES_LIMIT`` images.
        skip_bad_images: train and evaluate without the images that fail to decode (counted in
            ``summary.json``).
        recipe: a recipe name of ``recipes.json`` or a JSON file; None: the dataset's or model's default.
        overrides: recipe fields to replace (``{"epochs": 5, "lr": 0.05}``).
        lr_scaling: ``linear`` scales the recipe's lr by global batch / the recipe's reference batch
            (Goyal et al.'s rule); ``none`` uses it as given.
        steps_per_epoch: cap on the iterations per epoch (default: one pass over the split).
        model_dir: where checkpoints, logs, the final model and the summary go; default
            ``runs/<model>_<dataset>``, plus the data folder's name and a hash of its path when there is
            one (:func:`run_folder`).
        checkpoint_every: save the training state every this many iterations (and at each epoch end).
        resume: continue from the checkpoint in ``model_dir`` when there is one (it must come from the
            same model, data and recipe, the epochs aside); False starts over.
        overwrite: train again into a ``model_dir`` that holds a finished run (its ``summary.json``),
            from the start; without it such a folder is refused.
        strategy: ``default``, ``mirrored``, ``multi_worker`` (``TF_CONFIG``) or ``tpu``.
        tpu: the TPU name or address for ``strategy="tpu"``.
        sync_bn: with several replicas, batch statistics over the global batch (equals one device).
        deterministic: deterministic TensorFlow ops (a resumed run then equals an uninterrupted one).
        seed: seeds the weights, dropout and the whole input pipeline.
        weights: initial weights for the model builder (``imagenet`` or a path); None: from scratch.
        validation_freq: evaluate on the test split every this many epochs (0: only at the end).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        task: what to train for, a name of ``TASKS`` (``classify``: supervised classification).
        options: the model family's training options (``{"resource_weight": 1e-3}``), see
            :mod:`dynzoo.train.hooks`.
    """

    model: str = "micronet_m0"
    dataset: str = "digits"
    data_dir: str | None = None
    manual_dir: str | None = None
    check_images: bool | None = None
    skip_bad_images: bool = False
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    lr_scaling: str = "linear"
    steps_per_epoch: int | None = None
    model_dir: str | None = None
    checkpoint_every: int = 500
    resume: bool = True
    overwrite: bool = False
    strategy: str = "default"
    tpu: str | None = None
    sync_bn: bool = True
    deterministic: bool = False
    seed: int = 0
    weights: str | None = None
    validation_freq: int = 1
    verbose: int = 1
    task: str = "classify"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {self.task!r}.")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"`lr_scaling` must be one of {list(LR_SCALINGS)}, got {self.lr_scaling!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, got {self.strategy!r}.")
        for key, minimum in (("checkpoint_every", 0), ("validation_freq", 0), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{key}` must be an integer >= {minimum}, got {value!r}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1, got {self.steps_per_epoch}.")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1 or 2, got {self.verbose!r}.")


@dataclass
class TrainResult:
    """What a run produced: the model, the final test metrics, and the files it wrote."""

    model: Any
    summary: dict[str, Any]
    history: dict[str, list[float]]
    model_dir: Path


def run_folder(config: TrainConfig, label: str | None = None) -> Path:
    """The run's folder: ``config.model_dir``, or ``runs/<model>_<label or dataset>``, with the data
    folder's name and a hash of its absolute path appended when ``data_dir`` is given, so that runs on
    different folders never share one. A folder holding a finished run (``summary.json``) is refused
    unless ``config.overwrite``; a path that is a file is refused."""
    if config.model_dir:
        path = Path(config.model_dir)
    else:
        name = f"{config.model}_{label or config.dataset}"
        if config.data_dir:
            data = Path(config.data_dir).resolve()
            name += f"_{data.name}-{hashlib.sha256(os.fsencode(data)).hexdigest()[:8]}"
        path = Path("runs") / name
    if path.exists() and not path.is_dir():
        raise ValueError(f"`model_dir` {os.fspath(path)!r} is a file; the run needs a folder.")
    if (path / "summary.json").exists() and not config.overwrite:
        raise ValueError(
            f"{os.fspath(path)!r} holds a finished run (summary.json). Pass --overwrite to train it again "
            "from the start, or choose another --model-dir."
        )
    return path


UNCHECKED_IMAGES_HINT = (
    " Pass --check-images to find such files before training, or --skip-bad-images to leave them out."
)


def resolve_recipe(config: TrainConfig):
    from dynzoo.train.recipes import default_recipe_name, get_recipe

    name = config.recipe or default_recipe_name(config.model, config.dataset)
    return get_recipe(name).replace(**config.overrides), get_recipe(name).batch_size


def train(config: TrainConfig) -> TrainResult:
    """Run ``config.task`` (default: :func:`train_classifier`)."""
    import importlib

    module, function = TASKS[config.task].split(":")
    return getattr(importlib.import_module(module), function)(config)


def train_classifier(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run, evaluate on the test split, save the model and a summary.

    Every argument is checked — recipe keys and values, model, dataset, folder contents — before the
    first training step. Writes into ``model_dir``: ``checkpoint.npz`` (the resumable state),
    ``log.csv``, ``tensorboard/``, ``model.keras`` and ``summary.json``.
    """
    from dynzoo.registry import get_entry
    from dynzoo.train.hooks import TrainingContext, check_options, prepare_training

    recipe, reference_batch = resolve_recipe(config)
    family = get_entry(config.model).family  # unknown model → ValueError before anything runs
    check_options(family, config.options)
    model_dir = run_folder(config)

    import keras
    import tensorflow as tf

    from dynzoo.data import Augmentation, eval_dataset, open_source, train_dataset
    from dynzoo.data.sources import naming_undecodable_images
    from dynzoo.train import callbacks as cb
    from dynzoo.train.distribute import is_chief, make_strategy, work_around_multi_worker_fit

    strategy = make_strategy(config.strategy, config.tpu)  # before other TF work (multi-worker needs it)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    size = recipe.input_size
    train_src, test_src = (
        open_source(
            config.dataset,
            split,
            config.data_dir,
            image_size=size,
            manual_dir=config.manual_dir,
            check_images=config.check_images,
            skip_bad_images=config.skip_bad_images,
        )
        for split in ("train", "test")
    )
    replicas = strategy.num_replicas_in_sync
    global_batch = recipe.batch_size
    if global_batch % replicas:
        raise ValueError(
            f"`batch_size` (the global batch, {global_batch}) must be a multiple of the {replicas} replicas."
        )
    full_epoch = train_src.num_examples // global_batch
    if full_epoch < 1:
        raise ValueError(f"`batch_size` {global_batch} exceeds the {train_src.num_examples} training examples.")
    steps_per_epoch = min(config.steps_per_epoch or full_epoch, full_epoch)
    lr = recipe.lr * (global_batch / reference_batch if config.lr_scaling == "linear" else 1.0)
    chief = is_chief(strategy)

    val_data = eval_dataset(test_src, size, global_batch, crop_fraction=recipe.crop_fraction, one_hot=True)
    files = (*train_src.files, *test_src.files)
    with naming_undecodable_images(files, UNCHECKED_IMAGES_HINT):
        samples = _sample_images(val_data)
    context = TrainingContext(recipe.epochs, steps_per_epoch, samples, config.verbose)
    with strategy.scope():
        network = build_model(config, recipe, train_src.num_classes, sync_bn=config.sync_bn and replicas > 1)
        setup = prepare_training(family, network, config.options, context)
        model = setup.model
        base_loss = compile_for_recipe(model, recipe, lr, steps_per_epoch, train_src.num_classes)
    if config.strategy == "multi_worker":
        work_around_multi_worker_fit(model, strategy)

    # What a checkpoint must match to be resumed: the model, the data and the recipe (more epochs may
    # extend a run).
    identity = {
        "model": config.model,
        "dataset": config.dataset,
        "data_dir": os.fspath(Path(config.data_dir).resolve()) if config.data_dir else None,
        "train_examples": train_src.num_examples,
        "classes": list(train_src.class_names),
        **{f"recipe.{k}": v for k, v in recipe.as_dict().items() if k not in ("name", "epochs")},
    }
    resume = config.resume and not config.overwrite
    start_step, progress = (cb.restore_checkpoint(model_dir, model, identity) if resume else None) or (0, None)
    total_steps = recipe.epochs * steps_per_epoch
    _say(
        config,
        _plan(
            config,
            recipe,
            setup.network,
            train_src,
            replicas,
            global_batch,
            reference_batch,
            lr,
            steps_per_epoch,
            start_step,
            model_dir,
        ),
    )

    throughput = cb.Throughput(global_batch)
    done_in_epoch = start_step % steps_per_epoch
    resumed_epoch = progress if done_in_epoch and progress and progress["steps"] == done_in_epoch else None
    # first in the list: it completes a resumed epoch's logs before the CSV logger writes them
    callbacks = [
        cb.ResumableCheckpoint(
            model_dir, config.checkpoint_every, write=chief, identity=identity, resumed_epoch=resumed_epoch
        ),
        throughput,
        *setup.callbacks,
    ]
    if chief:
        model_dir.mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.CSVLogger(os.fspath(model_dir / "log.csv"), append=start_step > 0),
            keras.callbacks.TensorBoard(os.fspath(model_dir / "tensorboard"), update_freq="epoch"),
        ]

    def stream(step: int):
        return train_dataset(
            train_src,
            size,
            global_batch,
            steps_per_epoch=steps_per_epoch,
            start_step=step,
            seed=config.seed,
            augmentation=Augmentation(recipe.crop_scale, flip=recipe.flip),
            mixup=recipe.mixup,
            mixup_ramp_epochs=recipe.mixup_ramp_epochs,
        )

    history: dict[str, list[float]] = {}
    started = time.perf_counter()
    step = start_step
    with naming_undecodable_images(files, UNCHECKED_IMAGES_HINT):
        while step < total_steps:  # at most two fits: the rest of an interrupted epoch, then whole epochs
            epoch, done = divmod(step, steps_per_epoch)
            last_epoch = epoch + 1 if done else recipe.epochs
            fit = model.fit(
                stream(step),
                initial_epoch=epoch,
                epochs=last_epoch,
                steps_per_epoch=steps_per_epoch - done,
                callbacks=callbacks,
                verbose=config.verbose,
                shuffle=False,
                validation_data=val_data if config.validation_freq else None,
                validation_freq=config.validation_freq or 1,
            )
            for key, values in fit.history.items():
                history.setdefault(key, []).extend(values)
            step = (epoch + 1 if done else recipe.epochs) * steps_per_epoch
        train_seconds = time.perf_counter() - started
        scores = model.evaluate(val_data, verbose=0, return_dict=True)
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "recipe": recipe.as_dict(),
        "replicas": replicas,
        "global_batch": global_batch,
        "lr": lr,
        "epochs": recipe.epochs,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from_step": start_step,
        "params": setup.network.count_params(),
        "test_top1": float(scores["top1"]),
        "test_top5": float(scores.get("top5", scores["top1"])),
        "test_examples": test_src.num_examples,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(throughput.images_per_second[-1], 1) if throughput.images_per_second else None,
        "task": config.task,
        "options": dict(config.options),
        "skipped_images": {
            "train": len(train_src.skipped),
            "test": len(test_src.skipped),
            "files": [*train_src.skipped, *test_src.skipped][:100],
        },
    }
    if setup.report is not None:
        summary.update(setup.report(setup.network))
    if chief:
        # The saved model carries the plain loss: the weight-decay closure holds live variables.
        setup.network.compile(loss=base_loss, metrics=_metrics(train_src.num_classes))
        setup.network.save(model_dir / "model.keras")
        (model_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    _say(config, summary_table(summary))
    return TrainResult(setup.network, summary, history, model_dir)


def _sample_images(data, limit: int = 256):
    """Up to ``limit`` images of a batched ``(images, labels)`` dataset, as a numpy array."""
    import numpy as np

    batches = []
    for images, _ in data:
        batches.append(images.numpy())
        if sum(len(b) for b in batches) >= limit:
            break
    return np.concatenate(batches)[:limit]


def build_model(config: TrainConfig, recipe, classes: int, sync_bn: bool = False):
    """The registered model of ``config`` for ``recipe``'s input size, ``classes`` logits out."""
    import keras

    from dynzoo.registry import create_model

    model = create_model(
        config.model,
        input_shape=(recipe.input_size, recipe.input_size, 3),
        classes=classes,
        classifier_activation=None,
        dropout_rate=recipe.dropout,
        weights=config.weights,
    )
    if sync_bn:  # statistics over the global batch, so N replicas train like one device
        for layer in all_layers(model, include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


def compile_for_recipe(model, recipe, lr: float, steps_per_epoch: int, classes: int | None = None):
    """Compile ``model`` (logits out) for training with ``recipe`` at peak rate ``lr``: its optimizer and
    schedule, the authors' label-smoothed loss plus coupled L2, top-1/top-5 (``classes``: the number of
    logits, default ``model.output_shape[-1]``); build the optimizer (so a checkpoint can be restored into
    it). Returns the loss without the weight decay."""
    from dynzoo.train.losses import with_coupled_weight_decay

    base_loss = _loss(recipe)
    optimizer = _optimizer(recipe, lr, steps_per_epoch)
    model.compile(
        optimizer=optimizer,
        metrics=_metrics(classes or model.output_shape[-1]),
        loss=with_coupled_weight_decay(base_loss, model.trainable_variables, recipe.weight_decay),
    )
    optimizer.build(model.trainable_variables)
    return base_loss


def _optimizer(recipe, lr: float, steps_per_epoch: int):
    from dynzoo.train.optimizers import FusedAdam, FusedSGD
    from dynzoo.train.schedules import RecipeSchedule

    schedule = RecipeSchedule(
        lr, steps_per_epoch, recipe.epochs, recipe.schedule, recipe.warmup_epochs, recipe.milestones, recipe.gamma
    )
    if recipe.optimizer == "sgd":
        return FusedSGD(schedule, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return FusedAdam(schedule, beta_1=recipe.momentum, beta_2=recipe.beta_2)


def _loss(recipe):
    from dynzoo.train.losses import SmoothedCrossEntropy

    return SmoothedCrossEntropy(recipe.label_smoothing, from_logits=True)


def _metrics(classes: int) -> list:
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
    if classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    return metrics


def _plan(
    config, recipe, model, source, replicas, global_batch, reference_batch, lr, steps_per_epoch, start_step, model_dir
) -> str:
    scaling = (
        f"{recipe.lr:g} x {global_batch}/{reference_batch} (linear scaling)"
        if config.lr_scaling == "linear"
        else f"{recipe.lr:g} (no scaling)"
    )
    if start_step:
        origin = f"resuming at step {start_step}"
    else:
        origin = f"from weights {config.weights}" if config.weights else "from scratch"
    return "\n".join(
        [
            (
                f"dynzoo train: {config.model} ({model.count_params():,} parameters) on {config.dataset} "
                f"({source.num_examples} training images, {source.num_classes} classes), recipe {recipe.name!r}"
            ),
            (
                f"  global batch {global_batch} = {replicas} replica(s) x {global_batch // replicas}; "
                f"lr {lr:g} = {scaling}; {recipe.schedule} schedule, {recipe.warmup_epochs:g} warm-up epochs"
            ),
            (
                f"  {recipe.epochs} epochs x {steps_per_epoch} steps; weight decay {recipe.weight_decay:g} (coupled L2), "
                f"label smoothing {recipe.label_smoothing:g}, mixup {recipe.mixup:g}, input {recipe.input_size}"
            ),
            f"  {origin}; checkpoints every {config.checkpoint_every} steps in {model_dir}",
        ]
    )


def summary_table(summary: dict[str, Any]) -> str:
    """The final summary as a Markdown table."""
    rows = [
        ("model", summary["model"]),
        ("dataset", summary["dataset"]),
        ("recipe", summary["recipe"]["name"]),
        ("parameters", f"{summary['params']:,}"),
        ("epochs x steps", f"{summary['epochs']} x {summary['steps_per_epoch']}"),
        ("global batch (replicas)", f"{summary['global_batch']} ({summary['replicas']})"),
        ("peak lr", f"{summary['lr']:g}"),
        ("test top-1", f"{100 * summary['test_top1']:.2f}%"),
        ("test top-5", f"{100 * summary['test_top5']:.2f}%"),
        ("training time", f"{summary['train_seconds']} s"),
        ("training images/s", summary["train_images_per_second"] or "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        [f"| {'':{width}} | result |", f"|{'-' * (width + 2)}|--------|", *(f"| {k:{width}} | {v} |" for k, v in rows)]
    )


def _say(config: TrainConfig, text: str) -> None:
    if config.verbose:
        print(text, flush=True)
