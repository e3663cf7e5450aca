"""Domain-aware dynamic convolution (DDN, Zhang et al. 2019, arXiv 1911.13237 §3) and domain embeddings.

A DDN layer holds K expert kernels and mixes them with factors computed from a *domain* embedding, not
from the sample: ``α_j = sigmoid(θ_jᵀ E + b_j)``, ``W(D) = Σ_j α_j W_j`` (§3.1, eq. 1–2; α is not
normalised). Every image of a batch comes from one domain (Algorithm 1), so the kernel is mixed once per
batch and an ordinary convolution runs; for a fixed domain the mixture folds into a static layer
(:meth:`DomainAwareConv2D.fold`): the deployed network is the plain backbone.

The domain embedding ``E(D) = mean_{x∈D} e(x)`` averages the pooled features ``e(x)`` of a frozen
extractor over the domain's images (§3.1). :class:`DomainEmbeddings` holds one fixed vector per domain
(standardised per dimension over the training domains: no saturated sigmoids); :class:`StreamingDomainEmbedding`
estimates it on a device from the last N frames.

Paper: T. Zhang, X. Wang, K. Keutzer, B. Wu, J. E. Gonzalez, "Domain-Aware Dynamic Networks", 2019,
https://arxiv.org/abs/1911.13237.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import PACKAGE, channels_of, check_choice, check_int, conv_initializer, dense_initializer
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D, torch_output_size

KINDS = ("conv", "depthwise", "dense")


@keras.saving.register_keras_serializable(package=PACKAGE)
class DomainAwareConv2D(keras.layers.Layer):
    """K expert kernels mixed by a domain embedding (DDN §3.1, eq. 1–2; Algorithm 1).

    ``α = sigmoid(Dense_K(Ē))`` with ``Ē`` the mean of the embedding rows of the batch (a batch holds one
    domain, so every row is the same ``E(D)``), ``W = Σ_j α_j W_j``, ``b = Σ_j α_j b_j``, then one ordinary
    convolution / depthwise convolution / matrix product with ``W`` on the whole batch. Convolutions pad
    ``k // 2`` on both sides (PyTorch's convention, as the static zoo layers).

    Args:
        filters: output channels (units for ``kind="dense"``); None or C_in for ``kind="depthwise"``.
        kernel_size: odd k (conv and depthwise; 1 for dense).
        strides: stride (conv and depthwise; 1 for dense).
        experts: K ≥ 1 ("DDN 2x": 2, "DDN 4x": 4).
        kind: "conv" (kernel (K, k, k, C_in, C_out)), "depthwise" ((K, k, k, C, 1)) or "dense"
            ((K, C_in, units)).
        use_bias: one bias per expert, mixed with the same α.

    Inputs: ``[x, embedding]``: x (B, H, W, C_in) (dense: (B, C_in)) and embedding (B, D).
    Output: (B, H', W', filters), H' = ⌊(H + 2·(k//2) − k)/s⌋ + 1 (dense: (B, units)).
    Mixing factors: :meth:`mixing_factors` (K,).
    """

    def __init__(
        self,
        filters: int | None = None,
        kernel_size: int = 1,
        strides: int = 1,
        experts: int = 2,
        kind: str = "conv",
        use_bias: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kind = check_choice("kind", kind, KINDS)
        if filters is None and kind != "depthwise":
            raise ValueError(f"`filters` is required (an integer >= 1) for kind={kind!r}.")
        self.filters = None if filters is None else check_int("filters", filters)
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.strides = check_int("strides", strides)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (symmetric k//2 padding), got {kernel_size}.")
        if kind == "dense" and (self.kernel_size, self.strides) != (1, 1):
            raise ValueError("`kernel_size` and `strides` must be 1 for kind='dense'.")
        self.experts = check_int("experts", experts)
        self.use_bias = bool(use_bias)

    def _split_shapes(self, input_shape):
        if not (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) == 2
            and isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(f"{self.name}: `inputs` must be [x, embedding], got shape {input_shape}.")
        x_shape, e_shape = (tuple(s) for s in input_shape)
        rank = 2 if self.kind == "dense" else 4
        if len(x_shape) != rank or len(e_shape) != 2:
            raise ValueError(
                f"{self.name}: `inputs` must be [x of rank {rank}, embedding (B, D)], "
                f"got shapes {x_shape} and {e_shape}."
            )
        return x_shape, e_shape

    def build(self, input_shape):
        x_shape, e_shape = self._split_shapes(input_shape)
        cin = channels_of(x_shape, "DomainAwareConv2D")
        if self.kind == "depthwise" and self.filters not in (None, cin):
            raise ValueError(
                f"`filters` must be None or the input channels ({cin}) for kind='depthwise', got {self.filters}."
            )
        self.in_channels = cin
        self.out_channels = cin if self.kind == "depthwise" else self.filters
        k = self.kernel_size
        shape = {
            "conv": (k, k, cin, self.out_channels),
            "depthwise": (k, k, cin, 1),
            "dense": (cin, self.out_channels),
        }[self.kind]
        init = dense_initializer() if self.kind == "dense" else conv_initializer()
        self.kernel = self.add_weight(  # each expert initialised as a whole kernel (CondConv's rule)
            name="kernel",
            shape=(self.experts, *shape),
            initializer=lambda full, dtype=None: ops.stack([init(full[1:], dtype) for _ in range(full[0])]),
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.experts, self.out_channels), initializer="zeros")
            if self.use_bias
            else None
        )
        self.controller = keras.layers.Dense(
            self.experts, activation="sigmoid", kernel_initializer=dense_initializer(), name="controller"
        )
        self.controller.build((None, channels_of(e_shape, "DomainAwareConv2D embedding")))

    def mixing_factors(self, embedding):
        """α (K,) for the batch's domain: the controller on the mean embedding row."""
        return self.controller(ops.mean(embedding, axis=0, keepdims=True))[0]

    def mixed_weights(self, factors):
        """(kernel, bias or None) of the static layer that ``factors`` (K,) select."""
        kernel = ops.tensordot(factors, self.kernel, axes=1)
        bias = None if self.bias is None else ops.tensordot(factors, self.bias, axes=1)
        return kernel, bias

    def call(self, inputs):
        x, embedding = inputs
        kernel, bias = self.mixed_weights(self.mixing_factors(embedding))
        if self.kind == "dense":
            y = ops.matmul(x, kernel)
        else:
            pad = self.kernel_size // 2
            if pad:
                x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            if self.kind == "depthwise":
                y = ops.depthwise_conv(x, kernel, strides=self.strides, padding="valid")
            else:
                y = ops.conv(x, kernel, strides=self.strides, padding="valid")
        return y if bias is None else y + bias

    def fold(self, embedding) -> keras.layers.Layer:
        """The static layer equal to this one for ``embedding`` ((D,) or (1, D)), built, named like this
        layer: ``Dense``, ``Conv2D`` (1×1, stride 1), ``SymmetricConv2D`` or ``SymmetricDepthwiseConv2D``
        — the layers of the zoo's static networks, so a folded network is, op for op, the plain one."""
        factors = self.mixing_factors(ops.reshape(ops.convert_to_tensor(embedding, "float32"), (1, -1)))
        kernel, bias = (None if w is None else ops.convert_to_numpy(w) for w in self.mixed_weights(factors))
        k, s, common = self.kernel_size, self.strides, {"use_bias": self.use_bias, "name": self.name}
        if self.kind == "dense":
            layer, shape = keras.layers.Dense(self.out_channels, **common), (None, self.in_channels)
        elif self.kind == "depthwise":
            layer, shape = SymmetricDepthwiseConv2D(k, s, **common), (None, None, None, self.in_channels)
        elif k == 1 and s == 1:
            layer, shape = keras.layers.Conv2D(self.out_channels, 1, **common), (None, None, None, self.in_channels)
        else:
            layer, shape = SymmetricConv2D(self.out_channels, k, s, **common), (None, None, None, self.in_channels)
        layer.build(shape)
        layer.set_weights([kernel] if bias is None else [kernel, bias])
        return layer

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split_shapes(input_shape)
        cout = x_shape[-1] if self.kind == "depthwise" else self.filters
        if self.kind == "dense":
            return (x_shape[0], cout)
        h, w = (torch_output_size(n, self.kernel_size, self.strides) for n in x_shape[1:3])
        return (x_shape[0], h, w, cout)

    def compute_madds(self, input_shape) -> int:
        """The static layer's MAdds plus, once per batch, the controller (D·K) and the mixing (K·|W|)."""
        if not self.built:
            self.build(input_shape)
        out = self.compute_output_shape(input_shape)
        per_output = (1 if self.kind == "depthwise" else self.in_channels) * self.kernel_size**2
        static = int(np.prod([d for d in out[1:]])) * per_output
        mixing = self.experts * int(np.prod(self.kernel.shape[1:]))
        return static + mixing + self.controller.kernel.shape[0] * self.experts

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "experts": self.experts,
            "kind": self.kind,
            "use_bias": self.use_bias,
        }


def domain_aware_layers(model: keras.Model) -> list[DomainAwareConv2D]:
    """Every DomainAwareConv2D of ``model`` (top-level or a step of a block), in model order."""
    found = []
    for layer in model.layers:
        for item in [layer, *getattr(layer, "steps", [])]:  # blocks keep their convs in ``steps``
            if isinstance(item, DomainAwareConv2D):
                found.append(item)
    return found


def mixing_factor_table(model: keras.Model, embedding) -> dict[str, np.ndarray]:
    """``{layer path: α (K,)}`` of every domain-aware layer for one domain embedding (DDN Fig. 5)."""
    e = ops.reshape(ops.convert_to_tensor(embedding, "float32"), (1, -1))
    return {layer.path: ops.convert_to_numpy(layer.mixing_factors(e)) for layer in domain_aware_layers(model)}


# ---------------------------------------------------------------------------------------------------
# Domain embeddings.


def image_features(extractor: keras.Model, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """e(x) (N, D) of uint8 or float [0, 255] images, in inference mode."""
    images = np.asarray(images, "float32")
    return np.concatenate(
        [
            ops.convert_to_numpy(extractor(images[i : i + batch_size], training=False))
            for i in range(0, len(images), batch_size)
        ]
    )


class DomainEmbeddings:
    """Fixed per-domain embeddings ``E(D) = mean e(x)`` (DDN §3.1), standardised per dimension with the
    mean and standard deviation over the training domains (the paper leaves E raw) and scaled to norm ~``scale``
    whatever the extractor's width (see :meth:`standardise`). Saved as JSON:
    ``{"domains": {name: [D floats]}, "mean": …, "std": …, "scale": …}`` (the file that
    ``dynzoo export --domain-embedding`` reads).

    Args:
        raw: ``{domain: raw embedding (D,)}``.
        mean, std: standardisation statistics (D,); default: over ``raw``'s domains.
        scale: norm of the standardised embeddings (> 0). The controllers' logits move ``scale²`` times
            faster for the same learning rate: at 1 the mixing factors of a 6-epoch digits run stayed
            within 0.49–0.51 and the domain shuffle barely mattered; at 8 they spread over 0–1
            (``benchmarks/ddn_digits.py --embedding-scale``).
    """

    def __init__(self, raw: Mapping[str, np.ndarray], mean=None, std=None, scale: float = 1.0):
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not scale > 0:
            raise ValueError(f"`scale` must be a number > 0, got {scale!r}.")
        self.scale = float(scale)
        if not raw:
            raise ValueError("`raw` must hold at least one domain embedding.")
        self.raw = {str(k): np.asarray(v, "float32").reshape(-1) for k, v in raw.items()}
        dims = {v.shape[0] for v in self.raw.values()}
        if len(dims) != 1:
            raise ValueError(f"`raw`: every embedding must have the same length, got {sorted(dims)}.")
        stack = np.stack(list(self.raw.values()))
        self.mean = stack.mean(0) if mean is None else np.asarray(mean, "float32")
        self.std = np.maximum(stack.std(0), 1e-3) if std is None else np.asarray(std, "float32")

    @classmethod
    def from_images(
        cls, extractor: keras.Model, images: Mapping[str, np.ndarray], batch_size: int = 128, scale: float = 1.0
    ):
        """Embeddings of ``{domain: images}`` through ``extractor`` (see :func:`dynzoo.models.ddn.domain_feature_extractor`)."""
        return cls({d: image_features(extractor, x, batch_size).mean(0) for d, x in images.items()}, scale=scale)

    @property
    def domains(self) -> list[str]:
        return list(self.raw)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """z-score per dimension, times ``scale / √D``: an embedding of norm ~``scale`` whatever the
        extractor's width.
        (Without the √D, a controller's logits move √D times faster than its input layer's weights: with
        D = 1280 the sigmoids jump to 0, every expert is switched off and the following BatchNorm divides
        by ~0.)"""
        z = (np.asarray(raw, "float32") - self.mean) / self.std
        return (z * (self.scale / np.sqrt(self.dim))).astype("float32")

    def __getitem__(self, domain: str) -> np.ndarray:
        if domain not in self.raw:
            raise ValueError(f"`domain`: unknown domain {domain!r}; known: {self.domains}.")
        return self.standardise(self.raw[domain])

    def with_raw(self, raw: Mapping[str, np.ndarray]) -> DomainEmbeddings:
        """Other domains (e.g. the test split's) standardised with these statistics."""
        return DomainEmbeddings(raw, self.mean, self.std, self.scale)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(
            json.dumps(
                {
                    "domains": {k: v.tolist() for k, v in self.raw.items()},
                    "mean": self.mean.tolist(),
                    "std": self.std.tolist(),
                    "scale": self.scale,
                }
            )
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DomainEmbeddings:
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["domains"], data["mean"], data["std"], data.get("scale", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"`domain embedding` file {os.fspath(path)!r} is not a DomainEmbeddings JSON "
                f"({{'domains': {{name: [...]}}, 'mean': [...], 'std': [...]}}): {e}"
            ) from None


class StreamingDomainEmbedding:
    """The deployment estimator (DDN §3.1, "collect recent frames"): the running mean of e(x) over the
    last ``window`` frames, standardised like the training embeddings.

    Args:
        embeddings: the training :class:`DomainEmbeddings` (their standardisation is reused).
        window: N ≥ 1 frames averaged.
        extractor: optional frozen feature model for :meth:`update_images`.
    """

    def __init__(self, embeddings: DomainEmbeddings, window: int = 64, extractor: keras.Model | None = None):
        self.embeddings, self.window, self.extractor = embeddings, check_int("window", window), extractor
        self._buffer = np.zeros((self.window, embeddings.dim), "float64")
        self._count = 0

    def update(self, features: np.ndarray) -> None:
        """Push frame features (N, D) (oldest first)."""
        features = np.asarray(features, "float64").reshape(-1, self.embeddings.dim)
        for row in features[-self.window :]:
            self._buffer[self._count % self.window] = row
            self._count += 1

    def update_images(self, images: np.ndarray) -> None:
        if self.extractor is None:
            raise ValueError("`extractor` is required to update from images.")
        self.update(image_features(self.extractor, images))

    @property
    def frames(self) -> int:
        """Frames currently averaged (≤ window)."""
        return min(self._count, self.window)

    def embedding(self) -> np.ndarray:
        """The standardised running-mean embedding (D,)."""
        if not self._count:
            raise ValueError("no frame seen yet: call update() first.")
        return self.embeddings.standardise(self._buffer[: self.frames].mean(0))
