package org.dynzoo.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A batch-1 NHWC input tensor ready for the interpreter: float values for float32 inputs, the quantized
 * integers for int8/uint8 inputs.
 */
public final class InputTensor {
    public final TensorType dtype;
    /** {@code [1, height, width, channels]}. */
    public final int[] shape;
    /** Float32 inputs only (else null). */
    public final float[] floats;
    /** Quantized inputs only (else null): int8 values, or uint8 values 0…255. */
    public final int[] quantized;

    InputTensor(TensorType dtype, int[] shape, float[] floats, int[] quantized) {
        this.dtype = dtype;
        this.shape = shape;
        this.floats = floats;
        this.quantized = quantized;
    }

    public int elementCount() {
        return dtype.isQuantized() ? quantized.length : floats.length;
    }

    /** Value {@code i} as a number (float, or the quantized integer). */
    public double value(int i) {
        return dtype.isQuantized() ? quantized[i] : floats[i];
    }

    /** The raw tensor bytes in {@code order} (the interpreter wants native order, golden files little-endian). */
    public ByteBuffer toByteBuffer(ByteOrder order) {
        ByteBuffer buffer = ByteBuffer.allocateDirect(elementCount() * dtype.byteSize).order(order);
        writeTo(buffer);
        buffer.rewind();
        return buffer;
    }

    /** Writes the raw values at {@code buffer}'s position (reuse one buffer across camera frames). */
    public void writeTo(ByteBuffer buffer) {
        if (dtype.isQuantized()) {
            for (int q : quantized) {
                buffer.put((byte) q);
            }
        } else {
            for (float f : floats) {
                buffer.putFloat(f);
            }
        }
    }
}
