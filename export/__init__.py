"""dynzoo.export: from a Keras model to a TFLite (LiteRT) flatbuffer with builtin ops only."""

from dynzoo.export.tflite import ExportError, op_counts, op_names, run_tflite, to_tflite

__all__ = ["ExportError", "op_counts", "op_names", "run_tflite", "to_tflite"]
