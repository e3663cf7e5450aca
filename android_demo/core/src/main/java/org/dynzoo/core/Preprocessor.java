package org.dynzoo.core;

/**
 * Turns an {@link RgbImage} into the model's input tensor, following the bundle format's rules in order:
 *
 * <ol>
 *   <li>resize so that the shorter side is {@code resize_shorter} (bilinear, half-pixel centres, no
 *       antialiasing: the arithmetic of {@code tf.image.resize(method="bilinear", antialias=False)}), the
 *       longer side rounded to the nearest integer, then crop the centre {@code height x width} at offset
 *       {@code (size - crop) / 2};</li>
 *   <li>normalise: {@code v = p} when preprocessing is in the model, else {@code (p / 255 - mean[c]) / std[c]};</li>
 *   <li>quantize int8/uint8 inputs: {@code clamp(round_half_away_from_zero(v / scale) + zero_point)}.</li>
 * </ol>
 *
 * Only the cropped window is interpolated, so a camera frame costs {@code height * width} pixels, not the
 * whole resized frame.
 */
public final class Preprocessor {
    private Preprocessor() {
    }

    /** The input tensor for {@code image} under {@code input}'s rules. */
    public static InputTensor prepare(RgbImage image, ModelInfo.Input input) {
        float[] pixels = resizeAndCrop(image, input.resizeShorter, input.height, input.width);
        int channels = input.channels;
        float[] values = new float[pixels.length];
        for (int i = 0; i < pixels.length; i++) {
            int c = i % channels;
            values[i] = input.preprocessingInModel ? pixels[i] : (pixels[i] / 255f - input.mean[c]) / input.std[c];
        }
        int[] shape = {1, input.height, input.width, channels};
        if (!input.dtype.isQuantized()) {
            return new InputTensor(input.dtype, shape, values, null);
        }
        int[] quantized = new int[values.length];
        for (int i = 0; i < values.length; i++) {
            quantized[i] = input.quantization.quantize(values[i], input.dtype);
        }
        return new InputTensor(input.dtype, shape, null, quantized);
    }

    /** {@code {width, height}} after scaling {@code width x height} so that its shorter side is {@code shorter}. */
    public static int[] resizedSize(int width, int height, int shorter) {
        if (width <= height) {
            return new int[] {shorter, (int) Math.round((double) height * shorter / width)};
        }
        return new int[] {(int) Math.round((double) width * shorter / height), shorter};
    }

    /**
     * Rule 1: the centre {@code cropHeight x cropWidth} window of {@code image} resized to a shorter side of
     * {@code shorter}, as HWC floats in [0, 255] (not rounded: the model sees the interpolated values).
     */
    public static float[] resizeAndCrop(RgbImage image, int shorter, int cropHeight, int cropWidth) {
        int[] size = resizedSize(image.width, image.height, shorter);
        if (cropWidth > size[0] || cropHeight > size[1]) {
            throw new IllegalArgumentException("crop " + cropHeight + "x" + cropWidth + " does not fit the resized "
                    + size[1] + "x" + size[0] + " image");
        }
        Axis xs = new Axis(image.width, size[0], (size[0] - cropWidth) / 2, cropWidth);
        Axis ys = new Axis(image.height, size[1], (size[1] - cropHeight) / 2, cropHeight);
        float[] out = new float[cropHeight * cropWidth * 3];
        int o = 0;
        for (int y = 0; y < cropHeight; y++) {
            int top = ys.lower[y];
            int bottom = ys.upper[y];
            float yLerp = ys.lerp[y];
            for (int x = 0; x < cropWidth; x++) {
                int left = xs.lower[x];
                int right = xs.upper[x];
                float xLerp = xs.lerp[x];
                for (int c = 0; c < 3; c++) {
                    float topLeft = image.get(left, top, c);
                    float topRight = image.get(right, top, c);
                    float bottomLeft = image.get(left, bottom, c);
                    float bottomRight = image.get(right, bottom, c);
                    // Same operation order as TensorFlow's kernel, so float results agree bit for bit.
                    float upper = topLeft + (topRight - topLeft) * xLerp;
                    float lower = bottomLeft + (bottomRight - bottomLeft) * xLerp;
                    out[o++] = upper + (lower - upper) * yLerp;
                }
            }
        }
        return out;
    }

    /** Source indices and weights along one axis, for output positions {@code offset … offset + count - 1}. */
    private static final class Axis {
        final int[] lower;
        final int[] upper;
        final float[] lerp;

        Axis(int inSize, int outSize, int offset, int count) {
            lower = new int[count];
            upper = new int[count];
            lerp = new float[count];
            float scale = (float) inSize / (float) outSize;
            for (int i = 0; i < count; i++) {
                // Half-pixel centres: output pixel i samples input coordinate (i + 0.5) * scale - 0.5.
                float in = ((float) (i + offset) + 0.5f) * scale - 0.5f;
                float inFloor = (float) Math.floor(in);
                lower[i] = Math.max((int) inFloor, 0);
                upper[i] = Math.min((int) Math.ceil(in), inSize - 1);
                lerp[i] = in - inFloor;
            }
        }
    }
}
