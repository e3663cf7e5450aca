"""``dynzoo train`` / ``python -m dynzoo.train``: the absl-flags front end of :func:`dynzoo.train.train`.

Every recipe field has a flag of the same name; a flag that is not given keeps the recipe's value. absl names
the flags with underscores (``FLAGS.batch_size``); the command spells them with hyphens (``--batch-size``) and
accepts both (:func:`underscore_flags`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from absl import flags

from dynzoo.train.distribute import STRATEGIES
from dynzoo.train.recipes import OPTIMIZERS, SCHEDULES
from dynzoo.train.trainer import LR_SCALINGS, TASKS

FLAGS = flags.FlagValues()

# What to train on what.
flags.DEFINE_string("model", "micronet_m0", "registered model name (`dynzoo list`)", flag_values=FLAGS)
flags.DEFINE_string(
    "dataset",
    "digits",
    "'digits' (offline), 'folder' (--data-dir/<split>/<class>/<image>) or a "
    "TensorFlow Datasets name (imagenet2012, cifar10, cifar100, imagenette …)",
    flag_values=FLAGS,
)
flags.DEFINE_string("data_dir", None, "dataset folder (image folder root or TFDS data dir)", flag_values=FLAGS)
flags.DEFINE_string("manual_dir", None, "TFDS manual download folder (imagenet2012's archives)", flag_values=FLAGS)
flags.DEFINE_string(
    "recipe",
    None,
    "recipe name in zoo_configs/recipes.json or a JSON file of recipe keys; "
    "default: the dataset's (digits) or the model's papers' recipe",
    flag_values=FLAGS,
)
flags.DEFINE_string("weights", None, "initial weights: 'imagenet' or a path (default: from scratch)", flag_values=FLAGS)
flags.DEFINE_enum("task", "classify", list(TASKS), "what to train for", flag_values=FLAGS)
flags.DEFINE_boolean(
    "check_images",
    None,
    "decode every image of a folder dataset before training and name the "
    "ones that fail (default: for folders of up to 20,000 images)",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "skip_bad_images",
    False,
    "train without the images that fail to decode (counted in summary.json)",
    flag_values=FLAGS,
)

# Recipe overrides (None: keep the recipe's value).
flags.DEFINE_enum("optimizer", None, list(OPTIMIZERS), "optimizer", flag_values=FLAGS)
flags.DEFINE_float("momentum", None, "SGD momentum / Adam beta_1", flag_values=FLAGS)
flags.DEFINE_boolean("nesterov", None, "Nesterov momentum", flag_values=FLAGS)
flags.DEFINE_float("beta_2", None, "Adam beta_2", flag_values=FLAGS)
flags.DEFINE_float("lr", None, "learning rate at the recipe's reference batch (see --lr-scaling)", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", None, "global batch (split over the replicas)", flag_values=FLAGS)
flags.DEFINE_integer("epochs", None, "training epochs", flag_values=FLAGS)
flags.DEFINE_enum("schedule", None, list(SCHEDULES), "learning-rate schedule", flag_values=FLAGS)
flags.DEFINE_float("warmup_epochs", None, "linear warm-up epochs", flag_values=FLAGS)
flags.DEFINE_list("milestones", None, "epochs of the step schedule, e.g. 30,60,90", flag_values=FLAGS)
flags.DEFINE_float("gamma", None, "decay factor of the step/exp schedules", flag_values=FLAGS)
flags.DEFINE_float("weight_decay", None, "coupled L2 weight decay on every trainable variable", flag_values=FLAGS)
flags.DEFINE_float("label_smoothing", None, "epsilon; eps/(N-1) on each wrong class", flag_values=FLAGS)
flags.DEFINE_float("dropout", None, "dropout before the classifier", flag_values=FLAGS)
flags.DEFINE_float("mixup", None, "mixup alpha (0: off)", flag_values=FLAGS)
flags.DEFINE_integer("mixup_ramp_epochs", None, "epochs over which mixup alpha ramps up from 0", flag_values=FLAGS)
flags.DEFINE_integer("input_size", None, "square input size (at least 32)", flag_values=FLAGS)
flags.DEFINE_list("crop_scale", None, "min,max area fraction of the random resized crop", flag_values=FLAGS)
flags.DEFINE_boolean("flip", None, "random horizontal flip", flag_values=FLAGS)
flags.DEFINE_float("crop_fraction", None, "evaluation centre-crop fraction (0.875: 256 -> 224)", flag_values=FLAGS)

# The run.
flags.DEFINE_enum(
    "lr_scaling", "linear", list(LR_SCALINGS), "scale lr by global batch / recipe batch", flag_values=FLAGS
)
flags.DEFINE_integer(
    "steps_per_epoch", None, "cap on iterations per epoch (default: a full pass)", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_string(
    "model_dir",
    None,
    "output folder (default runs/<model>_<dataset>, plus the data folder's "
    "name and a hash of its path with --data-dir)",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "checkpoint_every", 500, "checkpoint every N steps (and at each epoch end)", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_boolean(
    "resume",
    True,
    "resume from the checkpoint in --model-dir if there is one (same model, data and recipe)",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "overwrite", False, "train again, from the start, into a --model-dir that holds a finished run", flag_values=FLAGS
)
flags.DEFINE_enum(
    "strategy", "default", list(STRATEGIES), "tf.distribute strategy (multi_worker reads TF_CONFIG)", flag_values=FLAGS
)
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu", flag_values=FLAGS)
flags.DEFINE_integer(
    "logical_cpus",
    None,
    "split the CPU into N logical devices (for --strategy=mirrored without accelerators)",
    lower_bound=1,
    flag_values=FLAGS,
)
flags.DEFINE_boolean("sync_bn", True, "with several replicas, BN statistics over the global batch", flag_values=FLAGS)
flags.DEFINE_boolean("deterministic", False, "deterministic TensorFlow ops", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "random seed (weights, dropout, input pipeline)", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer(
    "validation_freq", 1, "evaluate every N epochs (0: only at the end)", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer(
    "verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch", lower_bound=0, upper_bound=2, flag_values=FLAGS
)

RECIPE_FLAGS = (
    "optimizer",
    "momentum",
    "nesterov",
    "beta_2",
    "lr",
    "batch_size",
    "epochs",
    "schedule",
    "warmup_epochs",
    "milestones",
    "gamma",
    "weight_decay",
    "label_smoothing",
    "dropout",
    "mixup",
    "mixup_ramp_epochs",
    "input_size",
    "crop_scale",
    "flip",
    "crop_fraction",
)
LIST_TYPES = {"milestones": int, "crop_scale": float}
_DEFINE = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string, bool: flags.DEFINE_boolean}


def define_option_flags() -> list[str]:
    """A flag for every model family's training option (:mod:`dynzoo.train.hooks`); their names."""
    from dynzoo.train.hooks import training_options

    options = training_options()
    for name, (kind, text, families) in options.items():
        if name not in FLAGS:
            _DEFINE[kind](name, None, f"{text} ({', '.join(families)} models)", flag_values=FLAGS)
    return sorted(options)


def config_from_flags(values: flags.FlagValues, option_names: list[str] = ()):
    from dynzoo.train.trainer import TrainConfig

    options = {name: values[name].value for name in option_names if values[name].value is not None}
    overrides = {}
    for name in RECIPE_FLAGS:
        value = values[name].value
        if name in LIST_TYPES and value is not None:
            try:
                value = [LIST_TYPES[name](v) for v in value]
            except ValueError:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{flag}: expected comma-separated {LIST_TYPES[name].__name__}s, got {','.join(value)!r}."
                ) from None
        overrides[name] = value
    return TrainConfig(
        model=values.model,
        dataset=values.dataset,
        data_dir=values.data_dir,
        manual_dir=values.manual_dir,
        check_images=values.check_images,
        skip_bad_images=values.skip_bad_images,
        recipe=values.recipe,
        overrides=overrides,
        lr_scaling=values.lr_scaling,
        steps_per_epoch=values.steps_per_epoch,
        model_dir=values.model_dir,
        checkpoint_every=values.checkpoint_every,
        resume=values.resume,
        overwrite=values.overwrite,
        strategy=values.strategy,
        tpu=values.tpu,
        sync_bn=values.sync_bn,
        deterministic=values.deterministic,
        seed=values.seed,
        weights=values.weights,
        validation_freq=values.validation_freq,
        verbose=values.verbose,
        task=values.task,
        options=options,
    )


def underscore_flags(argv: Sequence[str], values: flags.FlagValues = FLAGS) -> list[str]:
    """``argv`` with each long option's name spelled as absl defines it, with underscores: ``--batch-size=64``
    → ``--batch_size=64``, and ``--no-sync-bn`` → ``--nosync_bn`` for a boolean flag of ``values``. Values
    and everything after a lone ``--`` are left as they are."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            name = name.replace("-", "_")
            if name.startswith("no_") and name[3:] in values and values[name[3:]].boolean:
                name = "no" + name[3:]
            out[i] = "--" + name + eq + value
    return out


def hyphenated(text: str) -> str:
    """``text`` with the flags it names spelled with hyphens: ``--batch_size``, ``--[no]check_images`` and absl's
    ``Unknown command line flag 'no_such_flag'``."""
    text = re.sub(r"--(\[no\])?[A-Za-z0-9_]+", lambda m: m.group(0).replace("_", "-"), text)
    return re.sub(r"(?<=flag ')[A-Za-z0-9_]+(?=')", lambda m: m.group(0).replace("_", "-"), text)


def main(argv: list[str]) -> int:
    """Parse ``argv`` (``argv[0]`` is the program name; flags with hyphens or underscores) and train. Bad flags
    or values: one error line, exit status 2, before any training starts."""
    prog = argv[0] if argv else "dynzoo train"
    option_names = define_option_flags()
    argv = [prog, *underscore_flags(argv[1:])]
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(
            f"usage: {prog} [--flag=value ...]\n\nTrain a registered model with a paper's recipe. A recipe "
            "field's flag that is left out keeps the recipe's value (zoo_configs/recipes.json); "
            "--batch-size is the global batch. The flags' underscore spellings work too.\n\n"
            f"{hyphenated(FLAGS.get_help())}"
        )
        return 0
    FLAGS.unparse_flags()  # every call starts from the defaults (several runs in one process)
    try:
        FLAGS(argv)
    except flags.Error as e:
        print(f"{prog}: error: {hyphenated(str(e))}", file=sys.stderr)
        return 2
    try:
        if FLAGS.logical_cpus:
            from dynzoo.train.distribute import split_cpu

            split_cpu(FLAGS.logical_cpus)
        from dynzoo.train.trainer import train

        train(config_from_flags(FLAGS, option_names))
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def add_commands(subparsers) -> None:
    """``dynzoo train``: every argument goes to the absl flags (``dynzoo train --helpfull``)."""
    p = subparsers.add_parser("train", add_help=False)
    p.set_defaults(func=lambda args: main(["dynzoo train", *args.forwarded]), forward_arguments=True)
