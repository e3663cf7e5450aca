"""Scale-out through ``tf.distribute``: one device, all local devices, several workers, or a TPU."""

from __future__ import annotations

import json
import os

from dynzoo._compat import tensorflow_trainer

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(count: int) -> None:
    """Expose the CPU as ``count`` logical devices (to run ``mirrored`` without accelerators, e.g. in
    tests). Must run before TensorFlow initialises its devices."""
    import tensorflow as tf

    if count < 1:
        raise ValueError(f"`logical_cpus` must be >= 1, got {count}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def make_strategy(name: str, tpu: str | None = None):
    """The ``tf.distribute`` strategy ``name``.

    * ``default``: the current device;
    * ``mirrored``: synchronous data parallelism over every local GPU (or every logical CPU when
      there is no GPU);
    * ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from the ``TF_CONFIG``
      environment variable, which must be set;
    * ``tpu``: ``TPUStrategy`` on the TPU ``tpu`` (name or grpc address; empty: the local one).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, got {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise ValueError(
                "`strategy=multi_worker` reads the cluster from the TF_CONFIG environment variable, which is not set."
            )
        try:
            json.loads(config)
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}.") from e
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def work_around_multi_worker_fit(model, strategy) -> None:
    """Make Keras 3's ``model.fit`` run under ``MultiWorkerMirroredStrategy``, where two of its steps fail.

    * Before training, the TensorFlow trainer builds the model symbolically from the first batch, which
      it reduces with one ``strategy.reduce`` over the whole ``(x, y)`` structure; the strategy reduces
      one value at a time and refuses it ("Attempt to convert a value (PerReplica…)",
      keras-team/keras#20329). The build needs only shapes and dtypes: this takes them from this worker's
      first replica instead. Keras still resets the iterator afterwards, so no batch is lost.
    * Each step's logs (scalars) are averaged over the replicas along axis 0, which a scalar does not
      have ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388);
      the trainer's reduction is replaced by one that averages scalars as they are (process-wide, and
      only for this strategy: ``keras.src.backend.tensorflow.trainer.reduce_per_replica``).

    Neither touches the training itself: the gradients are all-reduced by the optimizer as before."""
    import tensorflow as tf
    from keras import tree

    tf_trainer = tensorflow_trainer()
    if not getattr(tf_trainer.reduce_per_replica, "averages_scalars", False):
        keras_reduce = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy_, reduction):
            if reduction != "auto" or not isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
                return keras_reduce(values, strategy_, reduction)
            return tree.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=0 if v.shape.rank else None), values)

        reduce_per_replica.averages_scalars = True
        tf_trainer.reduce_per_replica = reduce_per_replica

    build = model._maybe_symbolic_build

    def first_replica(value):
        return (
            strategy.experimental_local_results(value)[0]
            if isinstance(value, tf.distribute.DistributedValues)
            else value
        )

    def build_from_local_values(iterator=None, data_batch=None):
        for _, _, batches in iterator or ():
            data_batch = tree.map_structure(first_replica, next(batches))
            break
        return build(data_batch=data_batch)

    model._maybe_symbolic_build = build_from_local_values


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints and logs (always, except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
