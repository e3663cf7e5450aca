"""Dynamic Residual Transfer (thesis ch. 6, §6.3): a static kernel plus an input-dependent residual.

``W(x) = W0 + ΔW(x)`` (eq. 6.2) with three residuals, one parametrized layer:

* ``"attention"`` (eq. 6.3): ``ΔW(x) = Λ(x) W0``, Λ = diag(sigmoid(·)) — in feature space
  ``y = (1 + Λ(x)) ⊙ (W0 * x)``;
* ``"routing"`` (eq. 6.4): ``ΔW(x) = Σ_i π_i(x) Φ_i``, π = softmax(·), Φ_i static basis kernels (1×1 on
  the narrow 3×3 layer of a bottleneck, as the authors' ``BottleneckKDRA``) — in feature space
  ``y = W0 * x + Σ_i π_i(x) (Φ_i * x)``;
* ``"combined"`` (eq. 6.5): both, ``y = (1 + Λ(x)) ⊙ (W0 * x) + Σ_i π_i(x) (Φ_i * x)``.

The feature-space form is exact (convolution is linear in the kernel) and uses TFLite builtins only: the
K basis kernels run as one convolution with K·C_out filters, the π-weighted sum as slices, MUL and ADD.

Paper: Y. Li, L. Yuan, Y. Chen, P. Wang, N. Vasconcelos, "Dynamic Transfer for Multi-Source Domain
Adaptation", CVPR 2021, https://arxiv.org/abs/2103.10583;
chapter 6 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

import keras
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
    count_madds,
    dense_initializer,
)
from dynzoo.layers.conv import SymmetricConv2D, torch_output_size

RESIDUALS = ("attention", "routing", "combined")
MIN_HIDDEN = 4


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicResidualConv2D(keras.layers.Layer):
    """Convolution with a dynamic residual, ``W(x) = W0 + ΔW(x)`` (thesis §6.3, eqs. 6.2–6.5).

    Coefficient branch (an SE-like branch on the *context* tensor g): ``h = ReLU(FC1(GAP(g)))`` with
    FC1: C_g → max(C_g // reduction, 4), no bias; then ``π = softmax(FC2(h))`` (K values, no bias) for
    routing and ``Λ = sigmoid(FC_Λ(h))`` (C_out values, with bias) for attention; the combined residual
    shares the trunk (the text leaves it open). The authors' code computes π from the bottleneck's *block
    input* (``BottleneckKDRA``): pass ``[x, block_input]`` for that form, or ``x`` alone for the text's form
    (g = x). Every convolution has PyTorch's symmetric k//2 padding and no bias (a BatchNorm follows).

    Args:
        filters: C_out ≥ 1.
        kernel_size: k of W0 (odd).
        strides: stride of W0 and of the basis kernels.
        residual: "routing" (the thesis's default), "attention" or "combined".
        num_bases: K ≥ 1 basis kernels Φ_i (the thesis's default 4; Table 6.1 sweeps 2–8).
        basis_kernel_size: k of the Φ_i (odd, ≤ ``kernel_size``; 1 as in the ResNet code).
        reduction: FC1 width is C_g // reduction (at least 4); the code uses 16.

    Input: ``x`` (B, H, W, C_in), or ``[x, g]`` with g (B, H_g, W_g, C_g).
    Output: (B, H', W', filters), H' = ⌊(H + 2·(k//2) − k)/s⌋ + 1.
    Per-sample coefficients: :meth:`coefficients` → {"routing": π (B, K), "attention": Λ (B, C_out)}.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        residual: str = "routing",
        num_bases: int = 4,
        basis_kernel_size: int = 1,
        reduction: int = 16,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.strides = check_int("strides", strides)
        self.residual = check_choice("residual", residual, RESIDUALS)
        self.num_bases = check_int("num_bases", num_bases)
        self.basis_kernel_size = check_int("basis_kernel_size", basis_kernel_size)
        self.reduction = check_int("reduction", reduction)
        for name, k in (("kernel_size", self.kernel_size), ("basis_kernel_size", self.basis_kernel_size)):
            if k % 2 == 0:
                raise ValueError(f"`{name}` must be odd (PyTorch's k//2 padding), got {k}.")
        if self.basis_kernel_size > self.kernel_size:
            raise ValueError(
                f"`basis_kernel_size` must be at most `kernel_size` ({self.kernel_size}), got {self.basis_kernel_size}."
            )
        self.routes = self.residual in ("routing", "combined")
        self.attends = self.residual in ("attention", "combined")

    @staticmethod
    def _split(input_shape):
        """(x shape, context shape) of a single input or an ``[x, context]`` pair."""
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            if len(input_shape) != 2:
                raise ValueError(f"DynamicResidualConv2D takes `x` or `[x, context]`, got {len(input_shape)} inputs.")
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), tuple(input_shape)

    def build(self, input_shape):
        if getattr(self, "_channels", None) is not None:
            return  # built ahead of time by a block that knows the context's channels (DRTBottleneck)
        x_shape, g_shape = self._split(input_shape)
        for name, shape in (("x", x_shape), ("context", g_shape)):
            if len(shape) != 4:
                raise ValueError(f"DynamicResidualConv2D: `{name}` must be (B, H, W, C), got shape {shape}.")
        cin = channels_of(x_shape, "DynamicResidualConv2D")
        cg = channels_of(g_shape, "DynamicResidualConv2D (context)")
        self.hidden = max(cg // self.reduction, MIN_HIDDEN)
        self.conv = SymmetricConv2D(
            self.filters,
            self.kernel_size,
            self.strides,
            use_bias=False,
            kernel_initializer=conv_initializer(),
            name="conv",
        )
        self.conv.build(x_shape)
        self.trunk = keras.layers.Dense(self.hidden, use_bias=False, kernel_initializer=dense_initializer(), name="fc1")
        self.trunk.build((None, cg))
        self.bases, self.routing_head, self.attention_head = [], None, None
        if self.routes:
            self.routing_head = keras.layers.Dense(
                self.num_bases, use_bias=False, kernel_initializer=dense_initializer(), name="fc2"
            )
            self.routing_head.build((None, self.hidden))
            # One layer per Φ_i keeps the authors' names (conv_s1 … conv_sK); call() runs them as one conv.
            self.bases = [
                SymmetricConv2D(
                    self.filters,
                    self.basis_kernel_size,
                    self.strides,
                    use_bias=False,
                    kernel_initializer=conv_initializer(),
                    name=f"conv_s{i}",
                )
                for i in range(1, self.num_bases + 1)
            ]
            for basis in self.bases:
                basis.build(x_shape)
        if self.attends:
            self.attention_head = keras.layers.Dense(
                self.filters, kernel_initializer=dense_initializer(), name="fc_attention"
            )
            self.attention_head.build((None, self.hidden))
        self._channels = (cin, cg)

    def _check(self, x, g):
        cin, cg = self._channels
        if x.shape[-1] != cin or g.shape[-1] != cg:
            raise ValueError(
                f"DynamicResidualConv2D was built for C_in={cin}, C_context={cg}; got inputs "
                f"{tuple(x.shape)} and {tuple(g.shape)}."
            )

    def coefficients(self, inputs) -> dict:
        """The per-sample coefficients: ``{"routing": π (B, K)}``, ``{"attention": Λ (B, C_out)}`` or both."""
        x, g = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        if not self.built:
            self.build(self._split([tuple(x.shape), tuple(g.shape)]))
        self._check(x, g)
        h = ops.relu(self.trunk(ops.mean(g, axis=(1, 2))))
        out = {}
        if self.routes:
            out["routing"] = ops.softmax(self.routing_head(h), axis=-1)
        if self.attends:
            out["attention"] = ops.sigmoid(self.attention_head(h))
        return out

    def basis_responses(self, x):
        """(B, H', W', K·C_out): every ``Φ_i * x``, computed as one convolution."""
        kernel = ops.concatenate([basis.kernel for basis in self.bases], axis=-1)
        pad = self.basis_kernel_size // 2
        if pad:
            x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return ops.conv(x, kernel, strides=self.strides, padding="valid")

    def call(self, inputs):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        coeffs = self.coefficients(inputs)
        y = self.conv(x)
        if self.attends:
            y = y * (1.0 + coeffs["attention"][:, None, None, :])
        if self.routes:
            responses = self.basis_responses(x)
            pi = coeffs["routing"]
            c = self.filters
            for i in range(self.num_bases):
                y = y + responses[..., i * c : (i + 1) * c] * pi[:, i, None, None, None]
        return y

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split(input_shape)
        h, w = (torch_output_size(n, self.kernel_size, self.strides) for n in x_shape[1:3])
        return (x_shape[0], h, w, self.filters)

    def compute_madds(self, input_shape) -> int:
        """W0's MAdds, the K basis convolutions, the π-weighted sum (K per output element), Λ's multiply
        (one per output element) and the FCs."""
        x_shape, _ = self._split(input_shape)
        if not self.built:
            self.build(input_shape)
        out = self.compute_output_shape(input_shape)
        elements = out[1] * out[2] * out[3]
        total = count_madds(self.conv, x_shape) + count_madds(self.trunk, (None, self._channels[1]))
        if self.routes:
            total += sum(count_madds(b, x_shape) for b in self.bases) + self.num_bases * elements
            total += count_madds(self.routing_head, (None, self.hidden))
        if self.attends:
            total += elements + count_madds(self.attention_head, (None, self.hidden))
        return total

    def official_children(self):
        """The authors' ``BottleneckKDRA`` names (relative to the block): W0 is the block's ``conv2``, FC1
        and FC2 are ``fc.0`` and ``fc.2``, Φ_i is ``conv_s{i}``; the text-only attention head has no
        official name and is left out."""
        children = [("conv", self.conv), ("fc.0", self.trunk)]
        if self.routes:
            children += [("fc.2", self.routing_head)] + [(f"conv_s{i}", b) for i, b in enumerate(self.bases, 1)]
        return children

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "residual": self.residual,
            "num_bases": self.num_bases,
            "basis_kernel_size": self.basis_kernel_size,
            "reduction": self.reduction,
        }
