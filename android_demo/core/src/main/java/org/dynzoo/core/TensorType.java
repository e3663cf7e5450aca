package org.dynzoo.core;

/** The element types a bundle's input and output tensors may have ({@code input.dtype}, {@code output.dtype}). */
public enum TensorType {
    FLOAT32("float32", 4, 0, 0),
    INT8("int8", 1, -128, 127),
    UINT8("uint8", 1, 0, 255);

    /** The name used in model_info.json. */
    public final String jsonName;
    /** Bytes per element. */
    public final int byteSize;
    /** Smallest and largest representable value (quantized types only). */
    public final int min;
    public final int max;

    TensorType(String jsonName, int byteSize, int min, int max) {
        this.jsonName = jsonName;
        this.byteSize = byteSize;
        this.min = min;
        this.max = max;
    }

    public boolean isQuantized() {
        return this != FLOAT32;
    }

    /** The type called {@code name} in model_info.json, or {@code null}. */
    public static TensorType fromJsonName(String name) {
        for (TensorType type : values()) {
            if (type.jsonName.equals(name)) {
                return type;
            }
        }
        return null;
    }
}
