"""Dynamic Convolution Decomposition (DCD, thesis ch. 3): ``DCDConv2D`` and the classifier ``DCDDense``.

The default form is the one of the authors' code, which the released weights need (``DYModule``, ``DYCls``):

    out = Λ(x) ⊙ (W0 * x) + P · [ BN2(Φ(x) · u) + u ],   u = BN1(Qᵀ x)

i.e. eq. 3.6 (``W(x) = Λ(x) W0 + P Φ(x) Qᵀ``) with an identity term and two BatchNorms in the latent
space. Λ(x) (C_out channel attention, range [0, 2]) and Φ(x) (an L×L matrix per sample) come from one
small branch: pool → FC → SE-style gate ``y ⊙ hsig2(FC(y))`` → two heads, no biases, where
``hsig2(z) = relu6(z + 3) / 3``.

Text variants (thesis §3.3–3.4, no official code) are options of the same layers: Λ only (``channel_fusion=
False``), Φ only (``attention=False``), the sparse dynamic residual with B block-diagonal blocks
(``blocks=B``, eq. 3.7), the depthwise DCD (``depthwise=True``, eq. 3.8) and a k×k kernel with channel
fusion alone (``kernel_size=k``: a 1×1 dynamic residual, strided like the kernel, on a static k×k conv).

Paper: Y. Li et al., "Revisiting Dynamic Convolution via Matrix Decomposition", ICLR 2021,
https://arxiv.org/abs/2103.08756;
chapter 3 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import (
    PACKAGE,
    batchnorm,
    bn_affine,
    channels_of,
    check_choice,
    check_divisible,
    check_int,
    conv_initializer,
    dense_initializer,
    quant_point,
)
from dynzoo.layers.conv import (
    SymmetricConv2D,
    SymmetricDepthwiseConv2D,
    torch_output_size,
)

# ---------------------------------------------------------------------------------------------------
# Latent-size and squeeze rules (one home for the rules of the text and of the official code).


def text_latent_dim(channels: int) -> int:
    """The text's default ``L = ⌊C / 2^⌊log2 √C⌋⌋`` (thesis §3.3.2)."""
    return max(1, channels // 2 ** math.floor(math.log2(math.sqrt(channels))))


def mobilenetv2_latent_dim(in_channels: int, out_channels: int) -> tuple[int, int]:
    """(L, pool_size) of the official MobileNetV2 ``DYModule`` (``mobilenetv2_dcd.py``): expanding layers pool 2×2."""
    mul, reduction = (4, 8) if in_channels < out_channels else (1, 2)
    features = in_channels * mul
    latent = min(features // reduction, out_channels // reduction)
    while latent**2 > 2 * features:
        reduction *= 2
        latent = min(features // reduction, out_channels // reduction)
    return max(latent, 4), 2 if mul == 4 else 1


def official_squeeze(features: int, latent_dim: int, fc_squeeze: int, minimum: int | None = 4) -> int:
    """``max(features, L²) // fc_squeeze``, at least ``minimum`` (None: no minimum, as DCD-ResNet-50)."""
    squeeze = max(features, latent_dim**2) // fc_squeeze
    return squeeze if minimum is None else max(squeeze, minimum)


INFERENCE_FORMS = ("auto", "parallel", "kernel")


def conv_bn(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization, x, training=None):
    """``bn(conv(x))``; at inference a DCDConv2D folds the BatchNorm into its own terms."""
    if isinstance(conv, DCDConv2D) and not training:
        return conv.inference(x, output_bn=bn)
    return bn(conv(x, training=training), training=training)


def hsig2(z):
    """``relu6(z + 3) / 3``: DCD's hard sigmoid with range [0, 2] (1 at z = 0)."""
    return ops.relu6(z + 3.0) / 3.0


def adaptive_pool(x, pool_size: int, channel_major: bool = True):
    """Average pool to ``pool_size``² cells, flattened channel-major (index ``c·4 + h·2 + w`` for 2×2)
    like PyTorch's ``AdaptiveAvgPool2d(n).flatten(1)`` (``channel_major=False``: NHWC order
    ``(h·2 + w)·C + c``). Odd sizes give overlapping windows ([0, ⌈H/2⌉) and [⌊H/2⌋, H)), as PyTorch's."""
    if pool_size == 1:
        return ops.mean(x, axis=(1, 2))
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None and height >= 2 and width >= 2:
        # Windows of ⌈n/2⌉ at stride ⌊n/2⌋ are exactly PyTorch's adaptive cells: one AVERAGE_POOL_2D.
        cells = ops.average_pool(x, (-(-height // 2), -(-width // 2)), (height // 2, width // 2), "valid")
    else:  # a size below 2, or one known only at run time (a model built for any input size)
        height = ops.shape(x)[1] if height is None else height
        width = ops.shape(x)[2] if width is None else width
        rows = [(0, -(-height // 2)), (height // 2, height)]
        cols = [(0, -(-width // 2)), (width // 2, width)]
        cells = ops.stack(
            [ops.stack([ops.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)) for c0, c1 in cols], 1) for r0, r1 in rows], 1
        )
    if channel_major:
        cells = ops.transpose(cells, (0, 3, 1, 2))
    return ops.reshape(cells, (-1, x.shape[-1] * 4))


def flatten_spatial(x):
    """(B, H, W, C) → (B, H·W, C) (static H, W keep the batch axis free for TFLite)."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is not None and width is not None:
        return ops.reshape(x, (-1, height * width, channels))
    return ops.reshape(x, (ops.shape(x)[0], -1, channels))


def unflatten_spatial(x, like):
    height, width = like.shape[1], like.shape[2]
    if height is not None and width is not None:
        return ops.reshape(x, (-1, height, width, x.shape[-1]))
    shape = ops.shape(like)
    return ops.reshape(x, (shape[0], shape[1], shape[2], x.shape[-1]))


def _dense(units: int, name: str, use_bias: bool = False) -> keras.layers.Dense:
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=dense_initializer(), name=name)


def _conv1x1(filters: int, name: str, strides: int = 1) -> keras.layers.Conv2D:
    # A strided unpadded 1×1 conv samples (s·i, s·j): the centres of PyTorch's k//2-padded k×k windows.
    return keras.layers.Conv2D(
        filters, 1, strides=strides, use_bias=False, kernel_initializer=conv_initializer(), name=name
    )


class _DCDBase(keras.layers.Layer):
    """What DCDConv2D and DCDDense share: the dynamic branch (Λ and Φ) and the latent fusion."""

    def _check_common(self, latent_dim, squeeze, reduction, attention, channel_fusion, blocks):
        self.latent_dim = None if latent_dim is None else check_int("latent_dim", latent_dim)
        self.squeeze = None if squeeze is None else check_int("squeeze", squeeze)
        self.reduction = check_int("reduction", reduction)
        self.attention = bool(attention)
        self.channel_fusion = bool(channel_fusion)
        if not (self.attention or self.channel_fusion):
            raise ValueError("`attention` and `channel_fusion` cannot both be False (that is a static conv).")
        self.blocks = check_int("blocks", blocks)

    def _build_branch(self, features: int, out_channels: int, phi_size: int):
        """pool features → squeeze → SE gate → heads fc_phi (``phi_size``) and fc_scale (C_out)."""
        squeeze = self.squeeze or max(4, max(features, phi_size) // self.reduction)
        self.squeeze_dim = squeeze
        self.fc = _dense(squeeze, "fc")
        self.fc_gate = _dense(squeeze, "fc_gate")
        self.fc.build((None, features))
        self.fc_gate.build((None, squeeze))
        self.fc_phi = self.fc_scale = None
        if phi_size:
            self.fc_phi = _dense(phi_size, "fc_phi")
            self.fc_phi.build((None, squeeze))
        if self.attention:
            self.fc_scale = _dense(out_channels, "fc_scale")
            self.fc_scale.build((None, squeeze))

    def _branch_madds(self, features: int) -> int:
        sq = self.squeeze_dim
        return sum(
            f * o
            for f, o in (
                (features, sq),
                (sq, sq),
                (sq, self.fc_phi.units if self.fc_phi else 0),
                (sq, self.fc_scale.units if self.fc_scale else 0),
            )
        )

    def _branch(self, pooled):
        """(Λ (B, C_out) or None, Φ flat (B, phi_size) or None)."""
        y = quant_point(self, self.fc(pooled), "fc")
        y = quant_point(self, y * quant_point(self, hsig2(self.fc_gate(y)), "gate"), "gated")
        scale = quant_point(self, hsig2(self.fc_scale(y)), "scale") if self.fc_scale is not None else None
        phi = quant_point(self, self.fc_phi(y), "phi") if self.fc_phi is not None else None
        return scale, phi

    def _phi_blocks(self, phi, size: int):
        """Split the flat Φ head into per-block row-major (B, L, L) matrices (``Φ[i, j] = out[i·L + j]``)."""
        per = size * size
        return [ops.reshape(phi[:, b * per : (b + 1) * per], (-1, size, size)) for b in range(self.blocks)]

    def _fuse(self, u_flat, phi, training):
        """``BN2(Φ u) + u`` on (B, N, B·L) latent pixels; block b uses its own Φ_b (eq. 3.7)."""
        size = self.latent_dim_
        parts = ops.split(u_flat, self.blocks, axis=-1) if self.blocks > 1 else [u_flat]
        # In channels-last, (Φ u)ᵀ = uᵀ Φᵀ: one BATCH_MATMUL per block.
        mixed = [
            ops.matmul(u, ops.transpose(p, (0, 2, 1))) for u, p in zip(parts, self._phi_blocks(phi, size), strict=False)
        ]
        v = ops.concatenate(mixed, axis=-1) if self.blocks > 1 else mixed[0]
        return self.bn2(v, training=training) + u_flat

    def coefficients(self, inputs) -> dict:
        """The per-sample dynamic coefficients: ``scale`` Λ(x) (B, C_out) and ``phi`` Φ(x)
        (B, blocks, L, L) — entries absent where the variant has no such term."""
        scale, phi = self._branch(self._pool(inputs))
        out = {}
        if scale is not None:
            out["scale"] = scale
        if phi is not None:
            out["phi"] = ops.stack(self._phi_blocks(phi, self.latent_dim_), axis=1)
        return out

    def _common_config(self):
        return {
            "latent_dim": self.latent_dim,
            "squeeze": self.squeeze,
            "reduction": self.reduction,
            "attention": self.attention,
            "channel_fusion": self.channel_fusion,
            "blocks": self.blocks,
        }

    def _branch_children(self):
        children = [("fc.0", self.fc), ("fc.1.fc.0", self.fc_gate)]
        if self.fc_phi is not None:
            children.append(("fc_phi", self.fc_phi))
        if self.fc_scale is not None:
            children.append(("fc_scale", self.fc_scale))
        return children


@keras.saving.register_keras_serializable(package=PACKAGE)
class DCDConv2D(_DCDBase):
    """Dynamic convolution decomposition of a convolution (thesis §3.3, eq. 3.6; official form §1.2.3).

    Standard form (``depthwise=False``), per pixel::

        out = Λ(x) ⊙ (W0 * x) + P_b · [ BN2(Φ_b(x) u_b) + u_b ],   u_b = BN1(Q_bᵀ x_b),  b = 1…B

    ``W0`` is a static k×k conv (C_in → filters, PyTorch padding k//2, stride s); ``Q`` is a 1×1 conv
    (C_in → L) with the same stride, so for k > 1 the dynamic residual is the text's "channel fusion
    alone" (a 1×1 kernel at the window centres); ``P`` is a 1×1 conv (L → filters). With ``blocks`` B > 1
    the residual is block-diagonal (eq. 3.7): Q_b/P_b act on the b-th slice of the input/output
    channels with a latent size L per block and a Φ_b per block (W0 stays full).

    Depthwise form (``depthwise=True``, eq. 3.8): ``W(x) = Λ(x) W0 + P Φ(x) Rᵀ`` with W0 a static
    depthwise k×k kernel, R the L_k basis kernels (k×k, shared by all channels), Φ(x) L_k×L_k and
    P C×L_k: ``y_c = Λ_c (W0_c * x_c) + Σ_j (P Φ(x))_{c,j} (R_j * x_c)``.

    The branch: pool (global, or PyTorch's adaptive 2×2 when ``pool_size=2``) → FC(squeeze) → gate
    ``y ⊙ hsig2(FC(y))`` → ``Λ = hsig2(FC(y))`` (C_out) and ``Φ = FC(y)`` (B·L² values, row-major).
    No biases anywhere; a BatchNorm (and activation) of the surrounding block follows.

    Args:
        filters: output channels (standard form); must be None or C_in for the depthwise form.
        kernel_size: k of W0 (odd).
        strides: stride of W0 (and of Q / the basis kernels).
        latent_dim: L per block (L_k for the depthwise form). None: the text's rule
            ``⌊C/2^⌊log2 √C⌋⌋`` on C_in/B (capped at C_out/B); depthwise ``⌊k²/2⌋``. Allowed:
            1 ≤ L ≤ min(C_in, filters)/B, and L_k < k².
        squeeze: width of the branch's FC. None: ``max(pool features, B·L²) // reduction``, at least 4.
        reduction: used when ``squeeze`` is None (16 in the text; 8 for small MobileNetV2s).
        pool_size: 1 (global average) or 2 (the official 2×2 pooling of expanding layers; needs a
            static input size).
        attention: include Λ(x). ``False`` gives the text's ``W0 + PΦQᵀ``.
        channel_fusion: include the dynamic residual. ``False`` gives the text's ``Λ W0``.
        blocks: B, diagonal blocks of the sparse dynamic residual; must divide C_in and filters.
        depthwise: the depthwise DCD of eq. 3.8.
        inference_form: how the official form runs at inference (all exact, see :meth:`inference`):
            "parallel" (static W0, Q, P convs with folded BNs, Φ as a small BATCH_MATMUL in latent
            space), "kernel" (one per-sample C_in×C_out matrix and a BATCH_MATMUL; 1×1 only) or
            "auto" (the faster of the two on TFLite for the layer's size).

    Input/output: (B, H, W, C_in) → (B, H', W', filters), H' = ⌊(H + 2·(k//2) − k)/s⌋ + 1.
    Per-sample coefficients: :meth:`coefficients`.
    """

    def __init__(
        self,
        filters: int | None = None,
        kernel_size: int = 1,
        strides: int = 1,
        latent_dim: int | None = None,
        squeeze: int | None = None,
        reduction: int = 16,
        pool_size: int = 1,
        attention: bool = True,
        channel_fusion: bool = True,
        blocks: int = 1,
        depthwise: bool = False,
        inference_form: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depthwise = bool(depthwise)
        self.inference_form = check_choice("inference_form", inference_form, INFERENCE_FORMS)
        if self.depthwise:
            self.filters = None if filters is None else check_int("filters", filters)
        else:
            if filters is None:
                raise ValueError("`filters` is required (an integer >= 1) unless `depthwise=True`.")
            self.filters = check_int("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (PyTorch's k//2 padding), got {kernel_size}.")
        self.strides = check_int("strides", strides)
        self.pool_size = check_choice("pool_size", pool_size, (1, 2))
        self._check_common(latent_dim, squeeze, reduction, attention, channel_fusion, blocks)
        if self.depthwise and self.blocks != 1:
            raise ValueError(f"`blocks` must be 1 for the depthwise form, got {blocks}.")
        if not self.depthwise and self.filters is not None:
            check_divisible("filters", self.filters, self.blocks, "blocks")
        if self.inference_form == "kernel" and not (self.foldable and self.kernel_size == 1 and self.strides == 1):
            raise ValueError(
                "`inference_form='kernel'` needs a 1×1 form (kernel_size=1, strides=1, depthwise=False, blocks=1)."
            )

    @property
    def foldable(self) -> bool:
        """The official form or its Λ-only / Φ-only variants, whose inference folds into static convs
        plus per-sample terms."""
        return not self.depthwise and self.blocks == 1

    def build(self, input_shape):
        cin = channels_of(input_shape, "DCDConv2D")
        k, s = self.kernel_size, self.strides
        if self.depthwise:
            if self.filters not in (None, cin):
                raise ValueError(
                    f"`filters` must be None or the input channels ({cin}) when depthwise, got {self.filters}."
                )
            cout = cin
            allowed = k * k - 1
            latent = self.latent_dim or (k * k) // 2
            if not 1 <= latent <= allowed:
                raise ValueError(
                    f"`latent_dim` (L_k) must be in [1, {allowed}] (L_k < k²) for kernel_size {k}, got {latent}."
                )
            self.conv = SymmetricDepthwiseConv2D(
                k, s, use_bias=False, depthwise_initializer=conv_initializer(), name="conv"
            )
        else:
            cout = self.filters
            check_divisible("input channels", cin, self.blocks, "blocks")
            allowed = min(cin, cout) // self.blocks
            latent = self.latent_dim or min(text_latent_dim(cin // self.blocks), allowed)
            if self.channel_fusion and latent > allowed:
                raise ValueError(
                    f"`latent_dim` must be at most min(C_in, filters)/blocks = {allowed} "
                    f"(C_in={cin}, filters={cout}, blocks={self.blocks}), got {latent}."
                )
            self.conv = SymmetricConv2D(cout, k, s, use_bias=False, kernel_initializer=conv_initializer(), name="conv")
        self.conv.build(input_shape)
        self.latent_dim_, self.in_channels, self.out_channels = latent, cin, cout
        phi_size = self.blocks * latent**2 if self.channel_fusion else 0
        self._build_branch(cin * self.pool_size**2, cout, phi_size)
        if self.channel_fusion and self.depthwise:
            self.basis = self.add_weight(name="basis", shape=(k, k, 1, latent), initializer=conv_initializer())
            self.p_weight = self.add_weight(name="p", shape=(cin, latent), initializer=dense_initializer())
        elif self.channel_fusion:
            self.q = [_conv1x1(latent, f"conv_q{b}" if b else "conv_q", s) for b in range(self.blocks)]
            self.p = [_conv1x1(cout // self.blocks, f"conv_p{b}" if b else "conv_p") for b in range(self.blocks)]
            for layer in self.q:
                layer.build(tuple(input_shape[:3]) + (cin // self.blocks,))
            for layer in self.p:
                layer.build((None, None, None, latent))
            self.bn1, self.bn2 = batchnorm("bn1"), batchnorm("bn2")
            self.bn1.build((None, None, None, self.blocks * latent))
            self.bn2.build((None, None, self.blocks * latent))

    def _pool(self, inputs):
        return adaptive_pool(inputs, self.pool_size)

    def call(self, inputs, training=None):
        if training or not self.foldable:
            return self._forward(inputs, training)
        return self.inference(inputs)

    def _forward(self, inputs, training):
        """The module as the official code writes it (training: batch statistics in BN1/BN2)."""
        scale, phi = self._branch(self._pool(inputs))
        y = self.conv(inputs)
        if scale is not None:
            y = y * ops.reshape(scale, (-1, 1, 1, self.out_channels))
        if not self.channel_fusion:
            return y
        if self.depthwise:
            return y + self._depthwise_residual(inputs, phi)
        xs = ops.split(inputs, self.blocks, axis=-1) if self.blocks > 1 else [inputs]
        u = [q(x) for q, x in zip(self.q, xs, strict=False)]
        u = self.bn1(ops.concatenate(u, axis=-1) if self.blocks > 1 else u[0], training=training)
        v = unflatten_spatial(self._fuse(flatten_spatial(u), phi, training), u)
        vs = ops.split(v, self.blocks, axis=-1) if self.blocks > 1 else [v]
        r = [p(part) for p, part in zip(self.p, vs, strict=False)]
        return y + (ops.concatenate(r, axis=-1) if self.blocks > 1 else r[0])

    def inference(self, inputs, output_bn: keras.layers.BatchNormalization | None = None):
        """Inference output, optionally followed by ``output_bn`` (the block's BatchNorm), with every
        static factor folded into constant weights (closed form), so that a converted graph has as few
        ops and passes over the large tensors as possible. Exact (float round-off).

        With ``bn(z) = s⊙z + t`` for BN1, BN2 and the output BN (s_o, t_o), and the branch's gated
        features ``g``: ``Λ = relu6(g W_Λ/3 + 3)/3``, ``Mᵀ = I + Φᵀ diag(s2)`` (one FC with folded
        weights and an identity bias), ``W0' = W0 diag(s_o/3)``, ``Q' = Q diag(s1)``, ``P' = P diag(s_o)``:

        * ``"parallel"``: ``out = 3Λ ⊙ (W0' * x) + ((x Q' + t1) Mᵀ) P' + (t2 P' + t_o)`` — static convs,
          one small BATCH_MATMUL in latent space;
        * ``"kernel"`` (1×1): ``out = x K(x) + b(x)`` with the per-sample ``K = W0' diag(3Λ) + Q' Mᵀ P'``
          — one BATCH_MATMUL over the pixels;
        * ``"auto"``: whichever of the two needs fewer multiply-adds beyond the static conv for the
          layer's shape (1×1, stride 1, static H×W; else "parallel"): generating the kernel costs
          ``C_in·L·(L + C_out) + 2·C_in·C_out`` once, the parallel path ``L·(C_in + C_out) + L² + 3·C_out``
          per pixel — in MobileNetV2 the kernel form down to 14×14, the parallel one at 7×7.

        The Λ-only variant drops the Φ terms (``out = 3Λ ⊙ (W0' * x) + t_o``), the Φ-only one the 3Λ
        factor; the depthwise and block-sparse variants run their unfolded module.
        """
        if not self.foldable:
            y = self._forward(inputs, False)
            return output_bn(y, training=False) if output_bn is not None else y
        cout, lat, cin = self.out_channels, self.latent_dim_, self.in_channels
        s_o, t_o = bn_affine(output_bn) if output_bn is not None else (ops.ones((cout,)), ops.zeros((cout,)))

        # The branch with its constants folded: PyTorch's channel-major 2×2 flattening becomes a row
        # permutation of fc.0; Φ's transpose, diag(s2), the identity term and the gate's 1/3 go into fc_phi.
        q = lambda x, tag: quant_point(self, x, tag)  # noqa: E731  (the tensors int8 export quantizes)
        pooled = q(adaptive_pool(inputs, self.pool_size, channel_major=False), "pooled")
        fc = self.fc.kernel
        if self.pool_size == 2:
            fc = ops.take(fc, np.array([c * 4 + k for k in range(4) for c in range(cin)], "int32"), axis=0)
        y = q(ops.matmul(pooled, fc), "fc")
        g = q(y * q(ops.relu6(self.fc_gate(y) + 3.0), "gate"), "gated")  # 3 × the official gated features
        w0 = self.conv.kernel * (s_o / 3.0 if self.attention else s_o)
        column = q(ops.relu6(ops.matmul(g, self.fc_scale.kernel / 3.0) + 3.0), "scale") if self.attention else None
        bias = ops.expand_dims(t_o, 0)  # (1, C_out)
        if self.channel_fusion:
            s1, t1 = bn_affine(self.bn1)
            s2, t2 = bn_affine(self.bn2)
            transposed = np.array([b * lat + a for a in range(lat) for b in range(lat)], "int32")
            phi_kernel = ops.take(self.fc_phi.kernel, transposed, axis=1) * (ops.tile(s2, (lat,)) / 3.0)
            eye = np.eye(lat, dtype="float32").reshape(-1)
            m_t = q(ops.reshape(ops.matmul(g, phi_kernel) + ops.convert_to_tensor(eye), (-1, lat, lat)), "phi")
            q_w = ops.reshape(self.q[0].kernel, (cin, lat)) * s1
            p = ops.reshape(self.p[0].kernel, (lat, cout)) * s_o
            bias = ops.matmul(ops.expand_dims(t2, 0), p) + bias

        if self._uses_kernel_form(inputs):
            w0 = ops.reshape(w0, (cin, cout))
            # (B, C_in, C_out): Λ or Φ (at least one is present) makes the kernel per-sample
            kernel = w0 if column is None else q(w0 * ops.expand_dims(column, 1), "scaled_kernel")
            if self.channel_fusion:
                fusion = q(ops.matmul(q(ops.matmul(ops.expand_dims(q_w, 0), m_t), "qm"), p), "fusion_kernel")
                kernel = kernel + fusion
                bias = ops.matmul(ops.matmul(ops.reshape(t1, (1, 1, lat)), m_t), p) + bias  # (B, 1, C_out)
                bias = q(bias, "bias")
            kernel = q(kernel, "kernel")
            return unflatten_spatial(ops.matmul(flatten_spatial(inputs), kernel) + bias, inputs)
        y = q(self._static_conv(inputs, w0), "conv")
        if column is not None:
            y = q(y * ops.reshape(column, (-1, 1, 1, cout)), "scaled")
        if self.channel_fusion:
            u = ops.conv(inputs, ops.reshape(q_w, (1, 1, cin, lat)), strides=self.strides, padding="valid") + t1
            v = q(unflatten_spatial(ops.matmul(flatten_spatial(q(u, "latent")), m_t), u), "fused")
            y = q(y + ops.conv(v, ops.reshape(p, (1, 1, lat, cout)), padding="valid"), "sum")
        return y + ops.reshape(bias, (cout,))

    def _uses_kernel_form(self, inputs) -> bool:
        if self.inference_form == "parallel" or self.kernel_size != 1 or self.strides != 1:
            return False
        if self.inference_form == "kernel":
            return True
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            return False
        cin, cout, lat = self.in_channels, self.out_channels, self.latent_dim_
        fusion = self.channel_fusion
        kernel_cost = (cin * lat * (lat + cout) if fusion else 0) + 2 * cin * cout
        parallel_cost = height * width * ((lat * (cin + cout) + lat * lat if fusion else 0) + 3 * cout)
        return kernel_cost <= parallel_cost

    def _static_conv(self, inputs, kernel):
        """W0 with a (folded) kernel and PyTorch's padding, as ``self.conv`` computes it."""
        k, s = self.kernel_size, self.strides
        if s == 1:
            return ops.conv(inputs, kernel, padding="same")
        pad = k // 2
        x = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) if pad else inputs
        return ops.conv(x, kernel, strides=s, padding="valid")

    def _depthwise_residual(self, inputs, phi):
        """``Σ_j (P Φ)_{c,j} (R_j * x_c)``: the L_k basis kernels as one depthwise conv (channel c·L_k + j),
        weighted per sample and channel."""
        k, s, c, lk = self.kernel_size, self.strides, self.in_channels, self.latent_dim_
        pad = k // 2
        x = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        z = ops.depthwise_conv(x, ops.tile(self.basis, (1, 1, c, 1)), strides=s, padding="valid")
        weights = ops.matmul(ops.expand_dims(self.p_weight, 0), ops.reshape(phi, (-1, lk, lk)))  # (B, C, L_k)
        zf = flatten_spatial(z)  # (B, H'W', C·L_k), channel c·L_k + j
        zf = (
            ops.reshape(zf, (-1, zf.shape[1], c, lk)) if zf.shape[1] else ops.reshape(zf, (ops.shape(zf)[0], -1, c, lk))
        )
        out = ops.sum(zf * ops.expand_dims(weights, 1), axis=-1)  # (B, H'W', C)
        return unflatten_spatial(out, z)

    def compute_output_shape(self, input_shape):
        h, w = (torch_output_size(n, self.kernel_size, self.strides) for n in input_shape[1:3])
        cout = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], h, w, cout)

    def compute_madds(self, input_shape) -> int:
        """W0 + Q + Φ mixing + P + Λ scaling per output pixel, plus the branch's FCs."""
        if not self.built:
            self.build(input_shape)
        _, h, w, _ = self.compute_output_shape(input_shape)
        pixels, k2 = h * w, self.kernel_size**2
        cin, cout, lat, b = self.in_channels, self.out_channels, self.latent_dim_, self.blocks
        static = pixels * k2 * (cin if not self.depthwise else 1) * cout
        dynamic = pixels * cout if self.attention else 0
        if self.channel_fusion and self.depthwise:
            dynamic += pixels * cin * lat * (k2 + 1) + cin * lat * lat
        elif self.channel_fusion:
            dynamic += pixels * (cin * lat + b * lat * lat + lat * cout)
        return static + dynamic + self._branch_madds(cin * self.pool_size**2)

    def official_children(self):
        """Sub-module names of the official ``DYModule`` (ResNet's ``q``/``p`` are renamed by its loader)."""
        if self.depthwise or self.blocks > 1:
            raise ValueError("only the official form (depthwise=False, blocks=1) has official weights.")
        children = [("conv", self.conv)] + self._branch_children()
        if self.channel_fusion:
            children += [("conv_q", self.q[0]), ("conv_p", self.p[0]), ("bn1", self.bn1), ("bn2", self.bn2)]
        return children

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "pool_size": self.pool_size,
            "depthwise": self.depthwise,
            "inference_form": self.inference_form,
            **self._common_config(),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class DCDDense(_DCDBase):
    """DCD of a fully connected layer: the dynamic classifier of DCD-MobileNetV2/ResNet (official
    ``DYCls`` of ``resnet_dcd.py``; thesis Table 3.3b "CLS")::

        out = Λ(x) ⊙ (W0 x + b) + P · [ BN2(Φ(x) u) + u ],   u = BN1(Qᵀ x)

    with the branch FC → gate → Λ = hsig2(FC) (``units``), Φ = FC (L×L, row-major) fed by x itself.
    The bias of W0 is scaled by Λ, as in the official code.

    Args:
        units: outputs.
        latent_dim: L (official 32); at most min(inputs, units).
        squeeze: width of the branch's FC (official 32). None: ``max(inputs, L²) // reduction``, ≥ 4.
        reduction: used when ``squeeze`` is None.
        attention: include Λ(x).
        channel_fusion: include the dynamic residual.
        use_bias: bias of the static W0.

    Input/output: (B, C_in) → (B, units).
    """

    def __init__(
        self,
        units: int,
        latent_dim: int = 32,
        squeeze: int | None = 32,
        reduction: int = 16,
        attention: bool = True,
        channel_fusion: bool = True,
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_int("units", units)
        self.use_bias = bool(use_bias)
        self._check_common(latent_dim, squeeze, reduction, attention, channel_fusion, 1)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"DCDDense takes (batch, features) inputs, got shape {input_shape}.")
        cin = channels_of(input_shape, "DCDDense")
        latent = self.latent_dim
        allowed = min(cin, self.units)
        if self.channel_fusion and latent > allowed:
            raise ValueError(f"`latent_dim` must be at most min(inputs, units) = {allowed}, got {latent}.")
        self.latent_dim_, self.in_channels = latent, cin
        self.cls = _dense(self.units, "cls", use_bias=self.use_bias)
        self.cls.build((None, cin))
        self._build_branch(cin, self.units, latent**2 if self.channel_fusion else 0)
        if self.channel_fusion:
            self.cls_q, self.cls_p = _dense(latent, "cls_q"), _dense(self.units, "cls_p")
            self.cls_q.build((None, cin))
            self.cls_p.build((None, latent))
            self.bn1, self.bn2 = batchnorm("bn1"), batchnorm("bn2")
            self.bn1.build((None, latent))
            self.bn2.build((None, 1, latent))

    def _pool(self, inputs):
        return inputs

    def call(self, inputs, training=None):
        scale, phi = self._branch(inputs)
        y = self.cls(inputs)
        if scale is not None:
            y = quant_point(self, quant_point(self, y, "cls") * scale, "scaled")
        if not self.channel_fusion:
            return y
        u = ops.expand_dims(quant_point(self, self.bn1(self.cls_q(inputs), training=training), "latent"), 1)
        v = quant_point(self, ops.squeeze(self._fuse(u, phi, training), 1), "fused")
        return y + self.cls_p(v)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def compute_madds(self, input_shape) -> int:
        if not self.built:
            self.build(input_shape)
        cin, lat, out = self.in_channels, self.latent_dim_, self.units
        dynamic = out if self.attention else 0
        if self.channel_fusion:
            dynamic += cin * lat + lat * lat + lat * out
        return cin * out + dynamic + self._branch_madds(cin)

    def official_children(self):
        children = [("cls", self.cls)] + self._branch_children()
        if self.channel_fusion:
            children += [("cls_q", self.cls_q), ("cls_p", self.cls_p), ("bn1", self.bn1), ("bn2", self.bn2)]
        return children

    def get_config(self):
        config = {**super().get_config(), "units": self.units, "use_bias": self.use_bias, **self._common_config()}
        config.pop("blocks")
        return config


def resnet_dcd_settings(in_channels: int, bottleneck: bool) -> dict:
    """Latent dim, squeeze and pooling of the official DCD-ResNet convs (``resnet_dcd.py``): BasicBlock
    ``conv_basic_dy`` (L = ⌊√(4·C_in)⌋, 2×2 pooling) and Bottleneck ``conv_dy`` (L = ⌊√C_in⌋, global
    pooling, no squeeze minimum)."""
    if bottleneck:
        latent = math.isqrt(in_channels)
        return {
            "latent_dim": latent,
            "squeeze": official_squeeze(in_channels, latent, 16, minimum=None),
            "pool_size": 1,
        }
    latent = math.isqrt(4 * in_channels)
    return {"latent_dim": latent, "squeeze": official_squeeze(4 * in_channels, latent, 16), "pool_size": 2}
