"""Domain-sampled training (DDN Algorithm 1) as the ``domains`` task of ``dynzoo train``.

A dataset *has a domain attribute* when every image belongs to one named domain and every domain has a
train and a test split of the same classes. Four kinds are read:

* ``digits_domains``: the offline benchmark, the digits under the 9 photometric domains
  {day, dusk, night} × {clear, fog, rain} (:data:`DIGIT_DOMAINS`), every training image in every domain;
* ``digits_domains_disjoint``: the same domains, each training image in one domain only (as a BDD100K
  frame has one weather and one time of day: about 150 per domain, stratified by class); every domain's
  test split is the whole test split under its transforms;
* ``domain_folder``: ``data_dir/<domain>/<split>/<class>/<image>`` (split ``train`` and ``test``);
* ``bdd100k``: BDD100K images and labels in ``data_dir``, domains = the weather × time-of-day attribute
  values (:mod:`dynzoo.data.bdd100k`).

Each step samples one domain with probability ∝ its size (the paper does not say; every training image once per
epoch, batches never mix domains), feeds its fixed embedding E(D) — the mean pooled feature of a frozen
extractor over the domain's training images, standardised — so every domain-aware layer mixes its
kernels once, and trains on a batch of that domain. A static model trains on the same batch stream (the
baseline). Evaluation is per domain with the domain's test-split embedding (the paper's transductive
protocol, paper §4); the domain shuffle (paper Table 6) feeds every other domain's embedding.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DIGIT_DOMAINS: dict[str, tuple[str, ...]] = {
    f"{time_name}_{weather}": time_steps + weather_steps
    for time_name, time_steps in (("day", ()), ("dusk", ("dusk",)), ("night", ("night",)))
    for weather, weather_steps in (("clear", ()), ("fog", ("fog",)), ("rain", ("rain",)))
}
DIGIT_DATASETS = ("digits_domains", "digits_domains_disjoint")  # offline, built from the digits
DATASETS = (*DIGIT_DATASETS, "domain_folder", "bdd100k")
TASK_OPTIONS: dict[str, tuple[type, str]] = {
    "extractor": (
        str,
        "--task domains: registered model whose pooled features give the domain embedding (default mobilenetv2_035)",
    ),
    "extractor_weights": (str, "--task domains: weights of the extractor (tag or path; default: fixed random)"),
    "embedding_scale": (
        float,
        "--task domains: norm of the standardised domain embeddings (default 1; "
        "larger makes the controllers learn faster, see DomainEmbeddings)",
    ),
    "bn_reestimate": (
        bool,
        "--task domains: also report accuracy with BatchNorm statistics re-estimated "
        "per domain on the baked per-domain networks",
    ),
    "domain_attributes": (str, "--task domains, bdd100k: attributes that define a domain (default timeofday,weather)"),
}


@dataclass
class DomainData:
    """One split of a dataset with a domain attribute: ``images[d]`` uint8 (N, S, S, 3), ``labels[d]``
    int32 (N,) for every domain d, and the class names."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]

    @property
    def domains(self) -> list[str]:
        return list(self.images)

    @property
    def num_examples(self) -> int:
        return sum(len(v) for v in self.labels.values())


def load_domains(
    dataset: str, split: str, image_size: int, data_dir: str | None = None, attributes: str | None = None, seed: int = 0
) -> DomainData:
    """``split`` ("train" or "test") of a dataset with a domain attribute (see the module docstring)."""
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    if dataset in DIGIT_DATASETS:
        from dynzoo.data.digits import DIGITS_LABELS
        from dynzoo.data.domains import domain_digits

        pairs = {name: domain_digits(steps, split, image_size, seed) for name, steps in DIGIT_DOMAINS.items()}
        if dataset == "digits_domains_disjoint" and split == "train":
            owner = deal_to_domains(next(iter(pairs.values()))[1], len(pairs), seed)
            pairs = {name: (x[owner == i], y[owner == i]) for i, (name, (x, y)) in enumerate(pairs.items())}
        return DomainData(
            {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}, tuple(DIGITS_LABELS)
        )
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {list(DATASETS)} for --task domains, got {dataset!r}.")
    if data_dir is None:
        raise ValueError(f"`data_dir` is required for the {dataset!r} dataset.")
    if dataset == "bdd100k":
        from dynzoo.data.bdd100k import load_bdd100k_domains

        attrs = tuple(a.strip() for a in (attributes or "timeofday,weather").split(","))
        images, labels, classes = load_bdd100k_domains(data_dir, split, image_size, attributes=attrs)
        return DomainData(images, labels, classes)
    return _folder_domains(Path(data_dir), split, image_size)


def deal_to_domains(labels: np.ndarray, domains: int, seed: int = 0) -> np.ndarray:
    """The domain index of each example: every class's examples, in a seeded random order, dealt to the
    domains in turn (so each domain gets about 1/``domains`` of every class)."""
    rng = np.random.default_rng(seed)
    owner = np.empty(len(labels), "int64")
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        owner[members] = (start + np.arange(len(members))) % domains
        start += len(members)
    return owner


def _folder_domains(root: Path, split: str, image_size: int) -> DomainData:
    """``root/<domain>/<split>/<class>/<image>``; every domain must have the same classes."""
    from dynzoo.data.sources import (
        bad_images_error,
        find_bad_images,
        list_image_folder,
        naming_undecodable_images,
        read_images,
    )

    domains = sorted(p.name for p in root.iterdir() if (p / split).is_dir()) if root.is_dir() else []
    if not domains:
        raise ValueError(f"`data_dir` {str(root)!r} has no <domain>/{split}/<class>/ folders.")
    images, labels, classes = {}, {}, None
    for domain in domains:
        names, files, y = list_image_folder(root / domain / split)
        bad = find_bad_images(files, decode=False)  # unreadable or not images; read_images decodes the rest
        if bad:
            raise bad_images_error(bad)
        if classes is not None and names != classes:
            raise ValueError(f"domain {domain!r} has classes {list(names)}; the first domain has {list(classes)}.")
        classes = names
        with naming_undecodable_images(files):
            images[domain] = read_images(files, image_size)
        labels[domain] = np.asarray(y, "int32")
    return DomainData(images, labels, tuple(classes))


def domain_batch_order(data: DomainData, batch_size: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """One epoch of Algorithm 1's steps: ``(domain, image indices)`` per step. Each domain's images are
    shuffled and cut into full batches (a domain smaller than a batch gives one batch drawn with
    replacement), then the steps are shuffled: domain d comes up with probability ∝ |D_d|."""
    steps = []
    for domain, labels in data.labels.items():
        n = len(labels)
        if n < batch_size:
            steps.append((domain, rng.integers(0, n, batch_size)))
            continue
        order = rng.permutation(n)
        steps += [(domain, order[i : i + batch_size]) for i in range(0, n - batch_size + 1, batch_size)]
    return [steps[i] for i in rng.permutation(len(steps))]


def domain_dataset(data: DomainData, embeddings, batch_size: int, seed: int = 0):
    """An endless ``tf.data`` stream of single-domain batches: ``((images, embedding rows), one-hot)``
    for a domain-aware model (``embeddings`` a :class:`~dynzoo.layers.domain.DomainEmbeddings`), or
    ``(images, one-hot)`` for a static one (``embeddings=None``)."""
    import tensorflow as tf

    classes = len(data.class_names)
    size = next(iter(data.images.values())).shape[1]

    def generate():
        epoch = 0
        while True:
            for domain, idx in domain_batch_order(data, batch_size, np.random.default_rng([seed, epoch])):
                x = data.images[domain][idx].astype("float32")
                y = np.eye(classes, dtype="float32")[data.labels[domain][idx]]
                if embeddings is None:
                    yield x, y
                else:
                    yield (x, np.tile(embeddings[domain], (len(idx), 1))), y
            epoch += 1

    image_spec = tf.TensorSpec((batch_size, size, size, 3), tf.float32)
    label_spec = tf.TensorSpec((batch_size, classes), tf.float32)
    if embeddings is None:
        signature = (image_spec, label_spec)
    else:
        signature = ((image_spec, tf.TensorSpec((batch_size, embeddings.dim), tf.float32)), label_spec)
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


def steps_per_epoch(data: DomainData, batch_size: int) -> int:
    return len(domain_batch_order(data, batch_size, np.random.default_rng(0)))


def predict_domain(model, images: np.ndarray, embedding: np.ndarray | None, batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` on one domain's images; ``embedding`` (D,) for a domain-aware model."""
    x = np.asarray(images, "float32")
    inputs = x if embedding is None else [x, np.tile(np.asarray(embedding, "float32"), (len(x), 1))]
    return model.predict(inputs, batch_size=batch_size, verbose=0)


def domain_accuracy(model, data: DomainData, embeddings=None) -> dict[str, float]:
    """Top-1 per domain, each domain with its own embedding (None for a static model)."""
    return {
        d: float(
            np.mean(
                predict_domain(model, data.images[d], None if embeddings is None else embeddings[d]).argmax(-1)
                == data.labels[d]
            )
        )
        for d in data.domains
    }


def shuffle_matrix(model, data: DomainData, embeddings) -> np.ndarray:
    """Accuracy A[i, j] of domain i's test images fed domain j's embedding (diagonal: the right one)."""
    return np.array(
        [
            [
                float(np.mean(predict_domain(model, data.images[d], embeddings[f]).argmax(-1) == data.labels[d]))
                for f in data.domains
            ]
            for d in data.domains
        ]
    )


def shuffle_summary(matrix: np.ndarray, permutations: int = 20, seed: int = 0) -> dict[str, float]:
    """Paper Table 6: mean accuracy over domains with the right embeddings ("normal") and with the
    embeddings permuted at random (``permutations`` derangements: no domain keeps its own), worst and
    average over the permutations."""
    n = len(matrix)
    rng = np.random.default_rng(seed)
    scores = []
    while len(scores) < permutations and n > 1:
        p = rng.permutation(n)
        if np.all(p != np.arange(n)):
            scores.append(float(matrix[np.arange(n), p].mean()))
    return {
        "normal": float(np.diag(matrix).mean()),
        "shuffled_worst": min(scores, default=float("nan")),
        "shuffled_average": float(np.mean(scores)) if scores else float("nan"),
        "permutations": len(scores),
    }


def per_domain_networks_accuracy(
    model, train: DomainData, test: DomainData, embeddings, test_embeddings, reestimate: bool
) -> dict[str, float]:
    """Top-1 per domain of the deployed per-domain network: the DDN baked for the domain (a static model
    as it is), optionally with its BatchNorm statistics re-estimated on the domain's training images."""
    from dynzoo.models.bake import bake_domain, reestimate_batchnorm

    result = {}
    weights = model.get_weights()
    for d in test.domains:
        if embeddings is None:
            net = model
            net.set_weights(weights)
        else:
            net = bake_domain(model, test_embeddings[d])
        if reestimate:
            reestimate_batchnorm(net, train.images[d])
        result[d] = float(np.mean(predict_domain(net, test.images[d], None).argmax(-1) == test.labels[d]))
    if embeddings is None:
        model.set_weights(weights)
    return result


def prepare_classify(network, options: dict[str, Any], context):
    """The ``ddn`` family's hook for ``--task classify``: a static twin trains as usual; a DDN needs
    domain batches."""
    from dynzoo.models.ddn import is_domain_aware
    from dynzoo.train.hooks import TrainingSetup

    if is_domain_aware(network) or options:
        raise ValueError(
            "DDN models and the options "
            f"{sorted(TASK_OPTIONS)} need domain-sampled training: use --task domains with a "
            f"dataset that has a domain attribute ({', '.join(DATASETS)})."
        )
    return TrainingSetup(model=network, network=network)


def train_domains(config) -> Any:
    """The ``domains`` task: Algorithm 1 on ``config.dataset``; writes ``model.keras``,
    ``domain_embeddings.json`` (train split), ``domain_embeddings_test.json``, ``log.csv`` and
    ``summary.json`` (per-domain and mean top-1, domain shuffle, per-domain BN re-estimation)."""
    import keras

    from dynzoo.layers.domain import DomainEmbeddings
    from dynzoo.models.ddn import domain_feature_extractor, is_domain_aware
    from dynzoo.registry import create_model, get_entry
    from dynzoo.train.hooks import check_options
    from dynzoo.train.trainer import (
        TrainResult,
        compile_for_recipe,
        resolve_recipe,
        run_folder,
    )

    options = dict(config.options)
    task_options = {k: options.pop(k) for k in list(options) if k in TASK_OPTIONS}
    family = get_entry(config.model).family
    check_options(family, options)
    scale = task_options.get("embedding_scale", 1.0)
    if not scale > 0:
        raise ValueError(f"`embedding_scale` must be > 0, got {scale!r}.")
    if config.dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {list(DATASETS)} for --task domains, got {config.dataset!r}.")
    if config.recipe is None and config.dataset in DIGIT_DATASETS:
        config = dataclasses.replace(config, recipe="digits")
    recipe, reference_batch = resolve_recipe(config)
    size, batch = recipe.input_size, recipe.batch_size
    model_dir = run_folder(config)
    say = print if config.verbose else (lambda *a, **k: None)

    attributes = task_options.get("domain_attributes")
    train = load_domains(config.dataset, "train", size, config.data_dir, attributes, config.seed)
    test = load_domains(config.dataset, "test", size, config.data_dir, attributes, config.seed)
    missing = sorted(set(test.domains) - set(train.domains))
    if missing:  # no embedding was learnt for them (BDD100K val has a few such rare combinations)
        say(f"skipping test domains without training images: {missing}")
        test = DomainData(
            {d: test.images[d] for d in train.domains if d in test.images},
            {d: test.labels[d] for d in train.domains if d in test.labels},
            test.class_names,
        )
    extractor = domain_feature_extractor(
        task_options.get("extractor", "mobilenetv2_035"), size, task_options.get("extractor_weights"), seed=config.seed
    )
    embeddings = DomainEmbeddings.from_images(extractor, train.images, scale=scale)
    test_embeddings = embeddings.with_raw(DomainEmbeddings.from_images(extractor, test.images).raw)

    keras.utils.set_random_seed(config.seed)
    kwargs = {"embedding_dim": embeddings.dim} if family == "ddn" and _takes_embedding(config.model) else {}
    network = create_model(
        config.model,
        input_shape=(size, size, 3),
        classes=len(train.class_names),
        classifier_activation=None,
        dropout_rate=recipe.dropout,
        weights=config.weights,
        **kwargs,
    )
    aware = is_domain_aware(network)
    steps = min(config.steps_per_epoch or steps_per_epoch(train, batch), steps_per_epoch(train, batch))
    lr = recipe.lr * (batch / reference_batch if config.lr_scaling == "linear" else 1.0)
    base_loss = compile_for_recipe(network, recipe, lr, steps, len(train.class_names))
    say(
        f"dynzoo train --task domains: {config.model} ({network.count_params():,} parameters) on "
        f"{config.dataset}: {len(train.domains)} domains, {train.num_examples} training images; "
        f"{recipe.epochs} epochs x {steps} single-domain steps of {batch}, lr {lr:g}"
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    stream = domain_dataset(train, embeddings if aware else None, batch, config.seed)
    started = time.perf_counter()
    fit = network.fit(
        stream,
        epochs=recipe.epochs,
        steps_per_epoch=steps,
        verbose=config.verbose,
        callbacks=[keras.callbacks.CSVLogger(str(model_dir / "log.csv"))],
    )
    seconds = time.perf_counter() - started

    fed = test_embeddings if aware else None
    per_domain = domain_accuracy(network, test, fed)
    summary: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "task": "domains",
        "recipe": recipe.as_dict(),
        "params": network.count_params(),
        "epochs": recipe.epochs,
        "steps_per_epoch": steps,
        "lr": lr,
        "domains": train.domains,
        "train_seconds": round(seconds, 1),
        "test_top1_per_domain": per_domain,
        "test_top1": float(np.mean(list(per_domain.values()))),
        "options": dict(config.options),
    }
    if aware:
        summary["domain_shuffle"] = shuffle_summary(shuffle_matrix(network, test, test_embeddings))
    if task_options.get("bn_reestimate"):
        bn = per_domain_networks_accuracy(
            network, train, test, embeddings if aware else None, test_embeddings, reestimate=True
        )
        summary["test_top1_per_domain_bn_reestimated"] = bn
        summary["test_top1_bn_reestimated"] = float(np.mean(list(bn.values())))
    network.compile(loss=base_loss)
    network.save(model_dir / "model.keras")
    embeddings.save(model_dir / "domain_embeddings.json")
    test_embeddings.save(model_dir / "domain_embeddings_test.json")
    (model_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    say(f"mean test top-1 over {len(per_domain)} domains: {100 * summary['test_top1']:.2f}%")
    return TrainResult(network, summary, dict(fit.history), model_dir)


def _takes_embedding(model_name: str) -> bool:
    from dynzoo.models.ddn import ddn_config

    return bool(ddn_config(model_name)["experts"])
