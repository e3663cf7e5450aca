"""dynzoo: dynamic convolutional networks for Keras 3, from the papers to the phone.

>>> import dynzoo
>>> model = dynzoo.create_model("micronet_m0")
>>> print(dynzoo.profile(model))
"""

__version__ = "0.1.0"

from dynzoo.logs import native_stderr_quiet, quiet_native_logs_in_the_command  # noqa: E402

quiet_native_logs_in_the_command()  # before TensorFlow is imported below

# TensorFlow's start-up lines (``I0000 … oneDNN custom operations are on``) ignore TF_CPP_MIN_LOG_LEVEL in
# current builds: in the command's quiet mode they are held back too (shown if the import fails).
with native_stderr_quiet():
    from dynzoo import (
        layers,  # noqa: E402  (registers the serializable layers)
        models,  # noqa: E402, F401  (registers the named models and blocks: load_model needs them)
    )
    from dynzoo.applications import decode_predictions, feature_levels, load_image, preprocess_input  # noqa: E402
    from dynzoo.profile import profile  # noqa: E402
    from dynzoo.registry import create_model, list_models, load_model  # noqa: E402
    from dynzoo.train import losses  # noqa: E402, F401  (the loss that `dynzoo train` saves with model.keras)

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
