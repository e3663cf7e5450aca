package org.dynzoo.core;

import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;

/** Hand-written bundle files for the unit tests: a valid int8 and float32 model_info.json and edits of them. */
final class Fixtures {
    static final String SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    static final String INT8_INFO = "{\n"
            + "  \"format_version\": 1,\n"
            + "  \"name\": \"micronet_m0_digits_int8\",\n"
            + "  \"source_model\": \"micronet_m0\",\n"
            + "  \"dynzoo_version\": \"0.1.0\",\n"
            + "  \"mode\": \"int8\",\n"
            + "  \"tflite_sha256\": \"" + SHA + "\",\n"
            + "  \"input\": {\n"
            + "    \"height\": 32, \"width\": 24, \"channels\": 3,\n"
            + "    \"layout\": \"NHWC\", \"color_order\": \"RGB\",\n"
            + "    \"dtype\": \"int8\",\n"
            + "    \"preprocessing_in_model\": false,\n"
            + "    \"mean\": [0.485, 0.456, 0.406],\n"
            + "    \"std\": [0.229, 0.224, 0.225],\n"
            + "    \"resize\": {\"method\": \"bilinear\", \"resize_shorter\": 37, \"crop\": \"center\"},\n"
            + "    \"quantization\": {\"scale\": 0.0187, \"zero_point\": -14}\n"
            + "  },\n"
            + "  \"output\": {\n"
            + "    \"num_classes\": 10,\n"
            + "    \"dtype\": \"int8\",\n"
            + "    \"activation\": \"softmax\",\n"
            + "    \"quantization\": {\"scale\": 0.00390625, \"zero_point\": -128}\n"
            + "  }\n"
            + "}\n";

    static final String FLOAT_INFO = edit(edit(edit(edit(INT8_INFO,
            "\"dtype\": \"int8\",\n    \"preprocessing_in_model\"", "\"dtype\": \"float32\",\n    \"preprocessing_in_model\""),
            "\"quantization\": {\"scale\": 0.0187, \"zero_point\": -14}", "\"quantization\": null"),
            "\"dtype\": \"int8\",\n    \"activation\": \"softmax\"", "\"dtype\": \"float32\",\n    \"activation\": \"none\""),
            "\"quantization\": {\"scale\": 0.00390625, \"zero_point\": -128}", "\"quantization\": null");

    static final String DIGIT_LABELS = "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n";

    private Fixtures() {
    }

    /** {@code text} with its single occurrence of {@code from} replaced (fails loudly if absent). */
    static String edit(String text, String from, String to) {
        int at = text.indexOf(from);
        if (at < 0 || text.indexOf(from, at + 1) >= 0) {
            throw new IllegalArgumentException("fixture edit needs exactly one \"" + from + "\"");
        }
        return text.substring(0, at) + to + text.substring(at + from.length());
    }

    /** Asserts that parsing {@code json} fails with a message containing every one of {@code parts}. */
    static void assertRejected(String json, String... parts) {
        try {
            ModelInfo.parse(json);
        } catch (BundleException e) {
            for (String part : parts) {
                assertTrue("message \"" + e.getMessage() + "\" should contain \"" + part + "\"",
                        e.getMessage().contains(part));
            }
            return;
        }
        fail("model_info.json was accepted but should fail with " + String.join(" … ", parts));
    }

    static void write(File file, String text) throws IOException {
        Files.write(file.toPath(), text.getBytes(StandardCharsets.UTF_8));
    }
}
