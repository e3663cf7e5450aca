package org.dynzoo.core;

/** Affine quantization of a tensor: {@code real = (q - zeroPoint) * scale}. */
public final class Quantization {
    /** Kept in double, as the Python reference computes with the JSON value. */
    public final double scale;
    public final int zeroPoint;

    public Quantization(double scale, int zeroPoint) {
        this.scale = scale;
        this.zeroPoint = zeroPoint;
    }

    /** {@code (q - zeroPoint) * scale}. */
    public float dequantize(int q) {
        return (float) ((q - zeroPoint) * scale);
    }

    /**
     * {@code clamp(round_half_away_from_zero(v / scale) + zeroPoint, type range)}, the bundle format's rule 3.
     */
    public int quantize(float v, TensorType type) {
        double scaled = v / scale;
        long rounded = (long) (Math.signum(scaled) * Math.floor(Math.abs(scaled) + 0.5));
        long q = rounded + zeroPoint;
        return (int) Math.max(type.min, Math.min(type.max, q));
    }

    @Override
    public String toString() {
        return "scale=" + scale + ", zero_point=" + zeroPoint;
    }
}
