"""CovNorm (thesis ch. 2, §2.3): task-specific adapters as PCA whitening · mini-adaptation · colouring.

A residual adapter ``T(x) = BN2(x + A·BN1(x))`` (A a d×d 1×1 conv) sits after a fixed layer of a frozen
backbone. Algorithm 1 of the thesis: (1) fine-tune A; (2) PCA of A's inputs u and outputs y = A·u, keeping
the k_x and k_y components that explain a fraction t of the variance; (3) replace A with
``ỹ = C̃_y M W̃_x (u − μ_x) + μ_y`` (eq. 2.8); (4) fine-tune the k_x×k_y matrix M only. The joint variant
(eq. 2.10) fits one global PCA on the pooled statistics of every task, so only M is task-specific.

As in the authors' code, W̃_x and C̃_y are plain PCA projections (no eigenvalue scaling: M absorbs it).
Unlike the code, which starts M at random, :func:`covnorm_weights` starts M at the projection of the
fine-tuned A onto the two PCA subspaces, so step 4 starts where step 1 ended.

Paper: Y. Li, N. Vasconcelos, "Efficient Multi-Domain Learning by Covariance Normalization", CVPR 2019,
https://doi.org/10.1109/CVPR.2019.00557;
chapter 2 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from dynzoo.layers.base import PACKAGE, batchnorm, channels_of, check_int


@keras.saving.register_keras_serializable(package=PACKAGE)
class CovNormAdapter(keras.layers.Layer):
    """Residual adapter ``T(x) = BN2(x + A(BN1(x)))`` acting on the last axis (a 1×1 conv on feature
    maps, a linear map on vectors), thesis §2.3.

    * ``rank_in=rank_out=None``: the residual adapter of step 1, ``A(u) = u·A + a`` with a trainable d×d A
      (zero at init, so T starts as BN2(x + BN1(x))).
    * ``rank_in=k_x, rank_out=k_y``: CovNorm, eq. 2.8, ``A(u) = ((u·W_x + b_w)·M + m)·C_y + b_c`` with the
      PCA whitening W_x (d×k_x, bias −μ_x·W_x) and colouring C_y (k_y×d, bias μ_y) fixed (set by
      :meth:`set_covnorm`) and the mini-adaptation M (k_x×k_y, bias m) trainable.

    Args:
        rank_in: k_x, 1 ≤ k_x ≤ d, or None (full adapter; then ``rank_out`` must be None too).
        rank_out: k_y, 1 ≤ k_y ≤ d, or None.

    Input/output: (..., d) → (..., d).
    """

    def __init__(self, rank_in: int | None = None, rank_out: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if (rank_in is None) != (rank_out is None):
            raise ValueError(
                f"`rank_in` and `rank_out` must both be None (full adapter) or both integers, "
                f"got {rank_in!r} and {rank_out!r}."
            )
        self.rank_in = None if rank_in is None else check_int("rank_in", rank_in)
        self.rank_out = None if rank_out is None else check_int("rank_out", rank_out)

    @property
    def is_covnorm(self) -> bool:
        return self.rank_in is not None

    def build(self, input_shape):
        d = channels_of(input_shape, "CovNormAdapter")
        for name, rank in (("rank_in", self.rank_in), ("rank_out", self.rank_out)):
            if rank is not None and rank > d:
                raise ValueError(f"`{name}` must be at most the {d} channels of the input, got {rank}.")
        self.channels = d
        self.bn1, self.bn2 = batchnorm("bn1"), batchnorm("bn2")
        self.bn1.build(input_shape)
        self.bn2.build(input_shape)
        self.bn1.input_spec = self.bn2.input_spec = None  # the adapter takes any rank (..., d)
        if not self.is_covnorm:
            self.kernel = self.add_weight(name="kernel", shape=(d, d), initializer="zeros")
            self.bias = self.add_weight(name="bias", shape=(d,), initializer="zeros")
            return
        kx, ky = self.rank_in, self.rank_out
        self.whitening = self.add_weight(name="whitening", shape=(d, kx), initializer="orthogonal", trainable=False)
        self.whitening_bias = self.add_weight(name="whitening_bias", shape=(kx,), initializer="zeros", trainable=False)
        self.mini_adaptation = self.add_weight(name="mini_adaptation", shape=(kx, ky), initializer="zeros")
        self.mini_bias = self.add_weight(name="mini_bias", shape=(ky,), initializer="zeros")
        self.colouring = self.add_weight(name="colouring", shape=(ky, d), initializer="orthogonal", trainable=False)
        self.colouring_bias = self.add_weight(name="colouring_bias", shape=(d,), initializer="zeros", trainable=False)

    def transfer(self, u):
        """A(u): the adapter's transfer term on BN1's output."""
        if not self.is_covnorm:
            return ops.matmul(u, self.kernel) + self.bias
        w = ops.matmul(u, self.whitening) + self.whitening_bias
        v = ops.matmul(w, self.mini_adaptation) + self.mini_bias
        return ops.matmul(v, self.colouring) + self.colouring_bias

    def transfer_terms(self, x, training=False):
        """(u = BN1(x), A(u)): what step 2 of Algorithm 1 fits its PCAs to."""
        u = self.bn1(x, training=training)
        return u, self.transfer(u)

    def call(self, inputs, training=None):
        if inputs.shape[-1] != self.channels:
            raise ValueError(f"CovNormAdapter was built for {self.channels} channels, got input {tuple(inputs.shape)}.")
        u = self.bn1(inputs, training=training)
        return self.bn2(inputs + self.transfer(u), training=training)

    def set_covnorm(self, input_pca: PCA, output_pca: PCA, mini_adaptation: np.ndarray, mini_bias: np.ndarray):
        """Set W_x, C_y from the PCAs (rows of ``components`` are eigenvectors) and the initial M, m."""
        if not self.is_covnorm:
            raise ValueError("set_covnorm needs a CovNorm adapter (rank_in and rank_out given).")
        px, py = input_pca.components, output_pca.components
        if px.shape != (self.rank_in, self.channels) or py.shape != (self.rank_out, self.channels):
            raise ValueError(
                f"PCA components {px.shape} / {py.shape} do not match rank_in×d "
                f"{(self.rank_in, self.channels)} / rank_out×d {(self.rank_out, self.channels)}."
            )
        self.whitening.assign(px.T)
        self.whitening_bias.assign(-input_pca.mean @ px.T)
        self.colouring.assign(py)
        self.colouring_bias.assign(output_pca.mean)
        self.mini_adaptation.assign(mini_adaptation)
        self.mini_bias.assign(mini_bias)

    def task_parameters(self, absorbed: bool = False) -> int:
        """Task-specific parameters: BN1/BN2 (affine and statistics) plus A, or for CovNorm W_x, C_y and M
        with biases (``absorbed``: after M is folded into the larger projection, 2d·min(k_x, k_y) + 2d,
        eq. 2.8's count). A joint-PCA task owns only M and the BNs: see :func:`joint_task_parameters`."""
        d = self.channels
        bns = 4 * d * 2
        if not self.is_covnorm:
            return bns + d * d + d
        kx, ky = self.rank_in, self.rank_out
        if absorbed:
            return bns + 2 * d * min(kx, ky) + 2 * d
        return bns + d * (kx + ky) + kx * ky + kx + ky + d

    def joint_task_parameters(self) -> int:
        """Task-specific parameters when W_x and C_y come from a global PCA shared by all tasks (eq. 2.10)."""
        return 4 * self.channels * 2 + self.rank_in * self.rank_out + self.rank_out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_madds(self, input_shape) -> int:
        positions = int(np.prod([n for n in input_shape[1:-1] if n is not None] or [1]))
        d = input_shape[-1]
        per = d * d if not self.is_covnorm else d * self.rank_in + self.rank_in * self.rank_out + self.rank_out * d
        return positions * per

    def get_config(self):
        return {**super().get_config(), "rank_in": self.rank_in, "rank_out": self.rank_out}


# ---------------------------------------------------------------------------------------------------
# Statistics and PCA (Algorithm 1, step 2; eq. 2.10 for the joint variant).


@dataclass(frozen=True)
class FeatureStatistics:
    """Count, mean (d,) and covariance (d, d) of features (every spatial position is one sample)."""

    count: int
    mean: np.ndarray
    covariance: np.ndarray


@dataclass(frozen=True)
class PCA:
    """Mean (d,) and the leading components (k, d), rows = eigenvectors by decreasing variance."""

    mean: np.ndarray
    components: np.ndarray
    explained: float


def feature_statistics(features) -> FeatureStatistics:
    """Statistics of ``features`` (..., d), in float64; the covariance is the population one (÷N), so that
    :func:`merge_statistics` is exact."""
    x = np.asarray(features, dtype="float64").reshape(-1, np.shape(features)[-1])
    mean = x.mean(axis=0)
    centred = x - mean
    return FeatureStatistics(len(x), mean, centred.T @ centred / len(x))


def merge_statistics(stats: list[FeatureStatistics]) -> FeatureStatistics:
    """The global statistics of several tasks (eq. 2.10): μ = Σ N_i μ_i / N,
    Σ = Σ_i (N_i / N)(Σ_i + μ_i μ_iᵀ) − μ μᵀ."""
    if not stats:
        raise ValueError("`stats` must hold at least one FeatureStatistics.")
    n = sum(s.count for s in stats)
    mean = sum(s.count * s.mean for s in stats) / n
    second = sum((s.count / n) * (s.covariance + np.outer(s.mean, s.mean)) for s in stats)
    return FeatureStatistics(n, mean, second - np.outer(mean, mean))


def pca(stats: FeatureStatistics, threshold: float = 0.99, max_rank: int | None = None) -> PCA:
    """The fewest components whose cumulative explained variance reaches ``threshold`` (the thesis's t,
    default 0.99; swept over [0.8, 0.995]), at most ``max_rank``."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"`threshold` must be a number in (0, 1], got {threshold!r}.")
    if max_rank is not None:
        check_int("max_rank", max_rank)
    values, vectors = np.linalg.eigh(stats.covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    ratio = np.cumsum(values) / max(values.sum(), 1e-12)
    k = int(np.searchsorted(ratio, threshold - 1e-12) + 1)
    k = min(k, len(values), len(values) if max_rank is None else max_rank)
    return PCA(stats.mean.astype("float32"), vectors[:, :k].T.astype("float32"), float(ratio[k - 1]))


def covnorm_weights(kernel: np.ndarray, bias: np.ndarray, input_pca: PCA, output_pca: PCA):
    """(M, m): the fine-tuned full adapter ``y = u·A + a`` seen through the PCAs,
    ``M = P_x A P_yᵀ`` and ``m = (μ_x A + a − μ_y) P_yᵀ``, so that eq. 2.8 reproduces A on the kept
    subspaces."""
    px, py = input_pca.components, output_pca.components
    mini = px @ kernel @ py.T
    mini_bias = (input_pca.mean @ kernel + bias - output_pca.mean) @ py.T
    return mini.astype("float32"), mini_bias.astype("float32")
