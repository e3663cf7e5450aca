"""Input data. The offline default is scikit-learn's handwritten digits (real data shipped inside the
scikit-learn package): no internet needed."""

from dynzoo.data.digits import DIGITS_LABELS, digits_arrays

__all__ = ["DIGITS_LABELS", "digits_arrays"]
