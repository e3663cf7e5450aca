package org.dynzoo.core;

import java.util.Locale;

/**
 * A validated {@code model_info.json} (bundle format version 1, see docs/bundle_format.md): everything an app
 * needs to feed the model and read its output. {@link #parse} rejects missing keys, wrong types and
 * inconsistent values with a message naming the key.
 */
public final class ModelInfo {
    public static final String FILE_NAME = "model_info.json";
    /** The newest bundle format this code understands. */
    public static final int FORMAT_VERSION = 1;

    public final int formatVersion;
    public final String name;
    /** Registered dynzoo model the bundle was exported from ("" when not recorded). */
    public final String sourceModel;
    public final String dynzooVersion;
    /** Export mode, e.g. "float32" or "int8" ("" when not recorded). */
    public final String mode;
    /** Lower-case hex sha256 of model.tflite. */
    public final String tfliteSha256;
    public final Input input;
    public final Output output;

    /** The {@code input} section: tensor geometry and the preprocessing rules 1–3 of the bundle format. */
    public static final class Input {
        public final int height;
        public final int width;
        public final int channels;
        public final TensorType dtype;
        /** When true the model rescales inside and is fed the resized pixel values {@code p} in [0, 255]. */
        public final boolean preprocessingInModel;
        /** Per-channel mean and std of {@code (p / 255 - mean) / std}; null when preprocessing is in the model. */
        public final float[] mean;
        public final float[] std;
        /** Shorter side after the bilinear resize, before the centre crop. */
        public final int resizeShorter;
        /** Null for float32 inputs. */
        public final Quantization quantization;

        Input(JsonObject json) throws BundleException {
            height = json.integer("height", 1, 16384);
            width = json.integer("width", 1, 16384);
            channels = json.integer("channels", 3, 3);
            json.choice("layout", "NHWC");
            json.choice("color_order", "RGB");
            dtype = TensorType.fromJsonName(json.choice("dtype", "float32", "int8", "uint8"));
            preprocessingInModel = json.bool("preprocessing_in_model");
            if (preprocessingInModel) {
                mean = null;
                std = null;
            } else {
                mean = json.numbers("mean", channels);
                std = json.numbers("std", channels);
                for (int c = 0; c < channels; c++) {
                    if (!(std[c] > 0)) {
                        throw json.invalid("std", "must hold positive numbers", std[c]);
                    }
                }
            }
            JsonObject resize = json.object("resize");
            resize.choice("method", "bilinear");
            resize.choice("crop", "center");
            resizeShorter = resize.integer("resize_shorter", 1, 16384);
            if (resizeShorter < Math.max(height, width)) {
                throw resize.invalid("resize_shorter",
                        "must be at least max(height, width) = " + Math.max(height, width)
                                + " so that the centre crop fits", (double) resizeShorter);
            }
            quantization = readQuantization(json, dtype);
        }

        /** Number of elements of the batch-1 NHWC tensor. */
        public int elementCount() {
            return height * width * channels;
        }
    }

    /** The {@code output} section: how to turn the raw output into class scores. */
    public static final class Output {
        public final int numClasses;
        public final TensorType dtype;
        /** True when the model ends in a softmax; otherwise scores are softmaxed for ranking. */
        public final boolean softmaxInModel;
        /** Null for float32 outputs. */
        public final Quantization quantization;

        Output(JsonObject json) throws BundleException {
            numClasses = json.integer("num_classes", 1, Integer.MAX_VALUE);
            dtype = TensorType.fromJsonName(json.choice("dtype", "float32", "int8", "uint8"));
            softmaxInModel = json.choice("activation", "softmax", "none").equals("softmax");
            quantization = readQuantization(json, dtype);
        }
    }

    private ModelInfo(JsonObject json) throws BundleException {
        formatVersion = json.integer("format_version", 1, Integer.MAX_VALUE);
        if (formatVersion > FORMAT_VERSION) {
            throw json.invalid("format_version", "is newer than this app understands (up to "
                    + FORMAT_VERSION + "); update the app", (double) formatVersion);
        }
        name = json.string("name");
        sourceModel = json.string("source_model", "");
        dynzooVersion = json.string("dynzoo_version", "");
        mode = json.string("mode", "");
        String sha = json.string("tflite_sha256").toLowerCase(Locale.ROOT);
        if (!sha.matches("[0-9a-f]{64}")) {
            throw json.invalid("tflite_sha256", "must be 64 hexadecimal digits", sha);
        }
        tfliteSha256 = sha;
        input = new Input(json.object("input"));
        output = new Output(json.object("output"));
    }

    /** Parses and validates the text of a model_info.json. */
    public static ModelInfo parse(String jsonText) throws BundleException {
        return new ModelInfo(JsonObject.parse(FILE_NAME, jsonText));
    }

    private static Quantization readQuantization(JsonObject json, TensorType dtype) throws BundleException {
        if (!dtype.isQuantized()) {
            if (!json.isNull("quantization")) {
                throw json.invalid("quantization", "must be null for a float32 tensor",
                        json.raw("quantization"));
            }
            return null;
        }
        if (json.isNull("quantization")) {
            throw json.invalid("quantization", "must give scale and zero_point (the tensor is "
                    + dtype.jsonName + ")", null);
        }
        JsonObject q = json.object("quantization");
        double scale = q.positiveNumber("scale");
        int zeroPoint = q.integer("zero_point", dtype.min, dtype.max);
        return new Quantization(scale, zeroPoint);
    }
}
