package org.dynzoo.core;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** Rule 4 of the bundle format: raw model output → class scores → the top-k categories. */
public final class Classification {
    private Classification() {
    }

    /** One ranked class. */
    public static final class Category {
        public final int index;
        public final String label;
        public final float score;

        public Category(int index, String label, float score) {
            this.index = index;
            this.label = label;
            this.score = score;
        }

        @Override
        public String toString() {
            return index + " (" + label + "): " + score;
        }
    }

    /**
     * Class scores from the raw output bytes at {@code raw}'s position (the buffer's byte order is used):
     * dequantized with {@code output.quantization} when the output is quantized, then softmaxed when the
     * model does not end in a softmax.
     */
    public static float[] scores(ByteBuffer raw, ModelInfo.Output output) {
        int expected = output.numClasses * output.dtype.byteSize;
        if (raw.remaining() < expected) {
            throw new IllegalArgumentException("output buffer holds " + raw.remaining() + " bytes, "
                    + output.numClasses + " " + output.dtype.jsonName + " values need " + expected);
        }
        float[] values = new float[output.numClasses];
        for (int i = 0; i < values.length; i++) {
            switch (output.dtype) {
                case FLOAT32:
                    values[i] = raw.getFloat();
                    break;
                case INT8:
                    values[i] = output.quantization.dequantize(raw.get());
                    break;
                default: // UINT8
                    values[i] = output.quantization.dequantize(raw.get() & 0xff);
                    break;
            }
        }
        return output.softmaxInModel ? values : softmax(values);
    }

    /** Numerically stable softmax (computed in double). */
    public static float[] softmax(float[] logits) {
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double[] e = new double[logits.length];
        double sum = 0;
        for (int i = 0; i < logits.length; i++) {
            e[i] = Math.exp(logits[i] - max);
            sum += e[i];
        }
        float[] out = new float[logits.length];
        for (int i = 0; i < logits.length; i++) {
            out[i] = (float) (e[i] / sum);
        }
        return out;
    }

    /**
     * The {@code k} best classes, highest score first; equal scores (common with quantized outputs) keep the
     * lower class index first, so the ranking is deterministic.
     */
    public static List<Category> topK(float[] scores, List<String> labels, int k) {
        if (k < 1) {
            throw new IllegalArgumentException("k must be at least 1, got " + k);
        }
        if (labels.size() != scores.length) {
            throw new IllegalArgumentException(labels.size() + " labels for " + scores.length + " scores");
        }
        List<Category> all = new ArrayList<>(scores.length);
        for (int i = 0; i < scores.length; i++) {
            all.add(new Category(i, labels.get(i), scores[i]));
        }
        // A stable sort keeps index order among ties.
        Collections.sort(all, (a, b) -> Float.compare(b.score, a.score));
        return new ArrayList<>(all.subList(0, Math.min(k, all.size())));
    }
}
