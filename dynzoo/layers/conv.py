"""Convolutions with PyTorch's padding arithmetic, so ported networks match their originals exactly.

TF's ``padding="same"`` pads asymmetrically (the extra row/column at the bottom/right) for stride 2 on
even inputs, which shifts every strided layer of a PyTorch network by one pixel; TF's depthwise
convolution also rejects unequal strides, which MicroNet uses. These layers pad ``k // 2`` on both
sides like ``nn.Conv2d(padding=k//2)`` and accept any strides.

Each layer has two forms of the same computation on the same weights. The export form (inside
:func:`~dynzoo.layers.base.export_form`, which the TFLite exporter enters) is one convolution per
layer, what the converter and XNNPACK run fastest. The compute form, everywhere else (training,
``predict``, other exporters), avoids Keras' TensorFlow path for grouped convolutions, which compiles each
one with XLA inside the graph (several times slower on CPU, and a nested function that ONNX export cannot
read): a grouped 1×1 convolution is a matrix product with a block-diagonal kernel (narrow) or a
batched one over the groups (wide), and an unequal-stride depthwise convolution is an ordinary
convolution with a block-diagonal kernel (few channels) or a native depthwise convolution on a reshaped
view of its input (many), computing only the outputs it keeps.
"""

from __future__ import annotations

import keras
from keras import ops

from dynzoo.layers.base import PACKAGE, check_pair, in_export_form

# C_in·C_out up to which a grouped 1×1 convolution trains as one dense matrix product
# (``_SymmetricPadding._pointwise_by_groups``): MicroNet-M3's layers at or below it ran faster that way,
# those above (64×384 and wider) faster as a batched product over the groups, but for two near ties.
DENSE_POINTWISE_MAX_MADDS = 16384

# Input channels up to which an unequal-stride depthwise convolution trains as an ordinary convolution with
# a block-diagonal kernel (``SymmetricDepthwiseConv2D._unequal_strides_computed``). MicroNet-M0's first
# block (4 channels at 112×112, forward and backward, batch 64): 11.6 ms against 21.9 ms folded and 57.7 ms
# subsampled; at 128 channels (28×28) the fold wins, 28.8 ms against 74.1 ms.
DENSE_DEPTHWISE_MAX_CHANNELS = 16


def torch_output_size(size: int | None, kernel: int, stride: int) -> int | None:
    """Output length of ``nn.Conv2d(kernel, stride, padding=kernel // 2)``."""
    if size is None:
        return None
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class _SymmetricPadding:
    """Mixin for Keras convolutions: symmetric ``k // 2`` padding and per-axis strides.

    Equal strides run the wrapped Keras convolution. Unequal strides (TF's depthwise kernel rejects
    them) run one convolution at the requested strides, a depthwise one as the equivalent grouped
    convolution (groups = input channels) in the export form: one strided CONV_2D in TFLite, which
    XNNPACK runs, instead of a convolution at the smaller stride followed by a subsampling slice (more
    work, and the slice is not delegated). The compute form is chosen by measurement
    (``SymmetricDepthwiseConv2D._unequal_strides_computed``), since the grouped form is an XLA island in
    Keras' TensorFlow backend. Where the stride is 1 and the kernel odd, Keras' ``"same"`` already pads
    symmetrically and no PAD op is added.
    """

    def _setup(self, kernel_size, strides, kwargs):
        if "padding" in kwargs and kwargs.pop("padding") not in ("symmetric", None):
            raise ValueError("`padding` is always symmetric (k // 2 on both sides) for this layer.")
        kernel = check_pair("kernel_size", kernel_size)
        sh, sw = check_pair("strides", strides)
        run = min(sh, sw)
        if sh % run or sw % run:
            raise ValueError(f"`strides` {sh, sw}: the larger stride must be a multiple of the smaller.")
        self.requested_strides = (sh, sw)
        self.subsample = (sh // run, sw // run)
        same = sh == sw == 1 and kernel[0] % 2 == 1 and kernel[1] % 2 == 1
        self.explicit_pad = None if same else (kernel[0] // 2, kernel[1] // 2)
        return kernel, run, "same" if same else "valid"

    def call(self, inputs):
        x = inputs
        if self.explicit_pad is not None and any(self.explicit_pad):
            ph, pw = self.explicit_pad
            x = ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        if not in_export_form() and self._grouped_pointwise():
            return self._pointwise_by_groups(x)
        if self.subsample == (1, 1):
            return super().call(x)
        if in_export_form():
            y = ops.conv(x, self._grouped_kernel(), strides=self.requested_strides, padding="valid")
        else:
            y = self._unequal_strides_computed(x)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def _unequal_strides_computed(self, x):
        """The compute form of a convolution with unequal strides (the export form is the same here)."""
        return ops.conv(x, self._grouped_kernel(), strides=self.requested_strides, padding="valid")

    def _grouped_kernel(self):
        """The kernel in ``Conv2D`` layout (kh, kw, C_in / groups, C_out)."""
        return self.kernel

    def _grouped_pointwise(self) -> bool:
        return False

    def _pointwise_by_groups(self, x):
        """A grouped 1×1 convolution (stride 1) in the form that trains fastest, by measurement on every
        grouped 1×1 convolution of MicroNet-M3 at 224×224 (forward and backward, batch 64): up to
        :data:`DENSE_POINTWISE_MAX_MADDS` multiply-adds per pixel as one matrix product with the
        block-diagonal (C_in, C_out) kernel (G times the multiply-adds, one GEMM, no data movement);
        above, as a batched matrix product over the groups between two transposes,
        (G, pixels, C_in/G) × (G, C_in/G, C_out/G). Both beat ``einsum``, which moves the data the same
        way less efficiently (399 ms for the 20 layers, against 231 ms for the batched product and 198 ms
        with the choice)."""
        groups, (in_per_group, out_channels) = self.groups, self.kernel.shape[2:]
        kernel = ops.transpose(ops.reshape(self.kernel, (in_per_group, groups, out_channels // groups)), (1, 0, 2))
        pixels = ops.reshape(x, (-1, groups * in_per_group))
        if groups * in_per_group * out_channels <= DENSE_POINTWISE_MAX_MADDS:
            diagonal = ops.reshape(ops.eye(groups, dtype=kernel.dtype), (groups, 1, groups, 1))
            y = ops.matmul(pixels, ops.reshape(ops.expand_dims(kernel, 2) * diagonal, (-1, out_channels)))
        else:
            by_group = ops.transpose(ops.reshape(pixels, (-1, groups, in_per_group)), (1, 0, 2))
            y = ops.transpose(ops.matmul(by_group, kernel), (1, 0, 2))
        y = ops.reshape(y, (*ops.shape(x)[:-1], out_channels))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        (kh, kw), (sh, sw) = self.kernel_size, self.requested_strides
        # only the channel count is taken from the Keras layer: give it a shape that fits its kernel
        full = super().compute_output_shape((input_shape[0], kh, kw, input_shape[3]))
        return (
            input_shape[0],
            torch_output_size(input_shape[1], kh, sh),
            torch_output_size(input_shape[2], kw, sw),
            full[-1],
        )

    def get_config(self):
        config = super().get_config()
        config.pop("padding", None)
        config["strides"] = list(self.requested_strides)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricConv2D(_SymmetricPadding, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with PyTorch's symmetric ``k // 2`` padding (any strides, groups allowed).

    Takes Conv2D's arguments except ``padding``.
    """

    def __init__(self, filters, kernel_size, strides=1, **kwargs):
        kernel, run, padding = self._setup(kernel_size, strides, kwargs)
        super().__init__(filters, kernel, strides=run, padding=padding, **kwargs)

    def _grouped_pointwise(self) -> bool:
        return self.groups > 1 and tuple(self.kernel_size) == (1, 1) and self.requested_strides == (1, 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricDepthwiseConv2D(_SymmetricPadding, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with PyTorch's symmetric padding and unequal strides.

    Output channel ``c·m + j`` comes from input channel ``c`` (m = ``depth_multiplier``), the same order
    as PyTorch's ``groups=C_in`` convolution. Takes DepthwiseConv2D's arguments except ``padding``.
    """

    def __init__(self, kernel_size, strides=1, **kwargs):
        kernel, run, padding = self._setup(kernel_size, strides, kwargs)
        super().__init__(kernel, strides=run, padding=padding, **kwargs)

    def _unequal_strides_computed(self, x):
        """An unequal-stride depthwise convolution in the form that trains fastest in Keras, by measurement
        on MicroNet's layers (:data:`DENSE_DEPTHWISE_MAX_CHANNELS`; ``benchmarks/train_profile.py``):

        * up to :data:`DENSE_DEPTHWISE_MAX_CHANNELS` input channels, one ordinary convolution (which takes
          unequal strides) with the block-diagonal kernel: C times the multiply-adds, but one oneDNN
          kernel, forward and backward;
        * wider, a kernel that spans only the strided axis as a native depthwise convolution with equal
          strides on a reshaped view of the input: a 1×k kernel with strides (1, s) sees each row alone,
          so the rows fold into the batch; a k×1 kernel with strides (s, 1) each column alone, so the
          columns fold into the batch after a transpose;
        * any other kernel falls back to the block-diagonal convolution.

        Only the kept outputs are computed (the obvious form, a stride-1 convolution subsampled by a
        strided slice, computes s times as many, and a slice's gradient is slow)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.requested_strides
        _, height, width, channels = ops.shape(x)
        multiplier = self.kernel.shape[-1]
        if self.kernel.shape[2] > DENSE_DEPTHWISE_MAX_CHANNELS:
            if kh == 1 and sh == 1:
                y = ops.depthwise_conv(
                    ops.reshape(x, (-1, 1, width, channels)), self.kernel, strides=sw, padding="valid"
                )
                return ops.reshape(y, (-1, height, ops.shape(y)[2], channels * multiplier))
            if kw == 1 and sw == 1:
                columns = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, 1, height, channels))
                y = ops.depthwise_conv(columns, ops.transpose(self.kernel, (1, 0, 2, 3)), strides=sh, padding="valid")
                y = ops.reshape(y, (-1, width, ops.shape(y)[2], channels * multiplier))
                return ops.transpose(y, (0, 2, 1, 3))
        return ops.conv(x, self._block_diagonal_kernel(), strides=self.requested_strides, padding="valid")

    def _block_diagonal_kernel(self):
        # (kh, kw, C, m) → (kh, kw, C, C·m): input channel c feeds outputs c·m … c·m + m − 1 only.
        kh, kw, channels, multiplier = self.kernel.shape
        diagonal = ops.reshape(ops.eye(channels, dtype=self.kernel.dtype), (1, 1, channels, channels, 1))
        return ops.reshape(ops.expand_dims(self.kernel, 2) * diagonal, (kh, kw, channels, channels * multiplier))

    def _grouped_kernel(self):
        # (kh, kw, C, m) → (kh, kw, 1, C·m): group c yields outputs c·m … c·m + m − 1, the depthwise order.
        kh, kw, channels, multiplier = self.kernel.shape
        return ops.reshape(self.kernel, (kh, kw, 1, channels * multiplier))
