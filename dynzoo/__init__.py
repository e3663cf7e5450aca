"""dynzoo: dynamic convolutional networks for Keras 3, from the papers to the phone.

>>> import dynzoo
>>> model = dynzoo.create_model("micronet_m0")
>>> print(dynzoo.profile(model))
"""

__version__ = "0.1.0"

from dynzoo.logs import in_the_command, native_stderr_quiet, quiet_native_logs_in_the_command  # noqa: E402

quiet_native_logs_in_the_command()  # before TensorFlow is imported (load_api)

__all__ = [
    "__version__",
    "create_model",
    "decode_predictions",
    "feature_levels",
    "layers",
    "list_models",
    "load_image",
    "load_model",
    "preprocess_input",
    "profile",
]


def load_api() -> None:
    """Import the API (``__all__``) and with it Keras and TensorFlow: this registers every serializable layer,
    model block and the training loss, which ``keras.models.load_model`` needs. ``import dynzoo`` runs it;
    only in the ``dynzoo`` command itself it waits until a command that needs TensorFlow runs (the first
    use of a name of the API runs it too), so that ``dynzoo --help`` and ``dynzoo serve-demo`` start fast."""
    global create_model, decode_predictions, feature_levels, layers, list_models, load_image, load_model
    global preprocess_input, profile
    # TensorFlow's start-up lines (``I0000 … oneDNN custom operations are on``) ignore TF_CPP_MIN_LOG_LEVEL in
    # current builds: in the command's quiet mode they are held back too (shown if the import fails).
    with native_stderr_quiet():
        import dynzoo.layers as layers  # registers the serializable layers
        import dynzoo.models  # noqa: F401  (registers the named models and blocks: load_model needs them)
        import dynzoo.train.losses  # noqa: F401  (the loss that `dynzoo train` saves with model.keras)
        from dynzoo.applications import decode_predictions, feature_levels, load_image, preprocess_input
        from dynzoo.profile import profile
        from dynzoo.registry import create_model, list_models, load_model


def __getattr__(name: str):  # the API's names before load_api() ran (in the command only)
    if name in __all__:
        load_api()
        return globals()[name]
    raise AttributeError(f"module 'dynzoo' has no attribute {name!r}")


if not in_the_command():
    load_api()
