package org.dynzoo.core;

import static org.dynzoo.core.Fixtures.FLOAT_INFO;
import static org.dynzoo.core.Fixtures.INT8_INFO;
import static org.dynzoo.core.Fixtures.assertRejected;
import static org.dynzoo.core.Fixtures.edit;
import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import org.junit.Test;

public class ModelInfoTest {
    @Test
    public void readsAnInt8Bundle() throws BundleException {
        ModelInfo info = ModelInfo.parse(INT8_INFO);
        assertEquals(1, info.formatVersion);
        assertEquals("micronet_m0_digits_int8", info.name);
        assertEquals("micronet_m0", info.sourceModel);
        assertEquals("int8", info.mode);
        assertEquals(Fixtures.SHA, info.tfliteSha256);
        assertEquals(32, info.input.height);
        assertEquals(24, info.input.width);
        assertEquals(3, info.input.channels);
        assertEquals(TensorType.INT8, info.input.dtype);
        assertFalse(info.input.preprocessingInModel);
        assertArrayEquals(new float[] {0.485f, 0.456f, 0.406f}, info.input.mean, 0f);
        assertArrayEquals(new float[] {0.229f, 0.224f, 0.225f}, info.input.std, 0f);
        assertEquals(37, info.input.resizeShorter);
        assertEquals(0.0187, info.input.quantization.scale, 0);
        assertEquals(-14, info.input.quantization.zeroPoint);
        assertEquals(10, info.output.numClasses);
        assertEquals(TensorType.INT8, info.output.dtype);
        assertTrue(info.output.softmaxInModel);
        assertEquals(0.00390625, info.output.quantization.scale, 0);
        assertEquals(-128, info.output.quantization.zeroPoint);
    }

    @Test
    public void readsAFloatBundle() throws BundleException {
        ModelInfo info = ModelInfo.parse(FLOAT_INFO);
        assertEquals(TensorType.FLOAT32, info.input.dtype);
        assertNull(info.input.quantization);
        assertEquals(TensorType.FLOAT32, info.output.dtype);
        assertFalse(info.output.softmaxInModel);
        assertNull(info.output.quantization);
    }

    @Test
    public void preprocessingInTheModelNeedsNoMeanOrStd() throws BundleException {
        String json = edit(edit(edit(FLOAT_INFO, "\"preprocessing_in_model\": false", "\"preprocessing_in_model\": true"),
                "\"mean\": [0.485, 0.456, 0.406],\n", ""), "\"std\": [0.229, 0.224, 0.225],\n", "");
        ModelInfo info = ModelInfo.parse(json);
        assertTrue(info.input.preprocessingInModel);
        assertNull(info.input.mean);
    }

    @Test
    public void optionalDescriptiveKeysMayBeMissing() throws BundleException {
        String json = edit(edit(INT8_INFO, "\"source_model\": \"micronet_m0\",\n", ""), "\"mode\": \"int8\",\n", "");
        ModelInfo info = ModelInfo.parse(json);
        assertEquals("", info.sourceModel);
        assertEquals("", info.mode);
    }

    @Test
    public void missingKeysAreNamed() {
        assertRejected(edit(INT8_INFO, "\"height\": 32, ", ""), "model_info.json", "missing required key \"input.height\"");
        assertRejected(edit(INT8_INFO, "\"num_classes\": 10,", ""), "missing required key \"output.num_classes\"");
        assertRejected(edit(INT8_INFO, "\"tflite_sha256\": \"" + Fixtures.SHA + "\",", ""),
                "missing required key \"tflite_sha256\"");
        assertRejected(edit(INT8_INFO, "\"zero_point\": -14", "\"zp\": -14"),
                "missing required key \"input.quantization.zero_point\"");
        assertRejected(edit(INT8_INFO, "\"method\": \"bilinear\", ", ""), "missing required key \"input.resize.method\"");
        assertRejected(edit(INT8_INFO, "\"mean\": [0.485, 0.456, 0.406],\n", ""), "missing required key \"input.mean\"");
        assertRejected(edit(INT8_INFO, "\"quantization\": {\"scale\": 0.0187, \"zero_point\": -14}", "\"quantization\": null"),
                "\"input.quantization\" must give scale and zero_point (the tensor is int8), got null");
    }

    @Test
    public void wrongTypesAreNamed() {
        assertRejected(edit(INT8_INFO, "\"height\": 32", "\"height\": \"32\""),
                "\"input.height\" must be an integer, got the string \"32\"");
        assertRejected(edit(INT8_INFO, "\"height\": 32", "\"height\": 32.5"), "\"input.height\" must be an integer, got 32.5");
        assertRejected(edit(INT8_INFO, "\"preprocessing_in_model\": false", "\"preprocessing_in_model\": \"false\""),
                "\"input.preprocessing_in_model\" must be true or false");
        assertRejected(edit(INT8_INFO, "\"mean\": [0.485, 0.456, 0.406]", "\"mean\": 0.5"),
                "\"input.mean\" must be a list of 3 numbers, got 0.5");
        assertRejected(edit(INT8_INFO, "\"mean\": [0.485, 0.456, 0.406]", "\"mean\": [0.485, \"a\", 0.406]"),
                "\"input.mean[1]\" must be a number");
        assertRejected(edit(INT8_INFO, "\"scale\": 0.0187", "\"scale\": \"0.0187\""),
                "\"input.quantization.scale\" must be a number");
        assertRejected(edit(INT8_INFO, "\"input\": {", "\"input\": [{") .replace("  },\n  \"output\"", "  }],\n  \"output\""),
                "\"input\" must be an object, got a list");
        assertRejected(edit(INT8_INFO, "\"name\": \"micronet_m0_digits_int8\"", "\"name\": 7"), "\"name\" must be a string, got 7");
        assertRejected("[1, 2]", "the top level must be a JSON object");
    }

    @Test
    public void inconsistentValuesAreRejected() {
        assertRejected(edit(INT8_INFO, "\"dtype\": \"int8\",\n    \"preprocessing", "\"dtype\": \"float16\",\n    \"preprocessing"),
                "\"input.dtype\" must be one of float32, int8, uint8, got the string \"float16\"");
        assertRejected(edit(INT8_INFO, "\"activation\": \"softmax\"", "\"activation\": \"relu\""),
                "\"output.activation\" must be one of softmax, none");
        assertRejected(edit(INT8_INFO, "\"resize_shorter\": 37", "\"resize_shorter\": 30"),
                "\"input.resize.resize_shorter\" must be at least max(height, width) = 32");
        assertRejected(edit(INT8_INFO, "\"std\": [0.229, 0.224, 0.225]", "\"std\": [0.229, 0, 0.225]"),
                "\"input.std\" must hold positive numbers");
        assertRejected(edit(INT8_INFO, "\"std\": [0.229, 0.224, 0.225]", "\"std\": [0.229, 0.224]"),
                "\"input.std\" must have 3 entries (one per channel), got 2");
        assertRejected(edit(INT8_INFO, "\"zero_point\": -14", "\"zero_point\": 200"),
                "\"input.quantization.zero_point\" must be between -128 and 127, got 200");
        assertRejected(edit(INT8_INFO, "\"scale\": 0.0187", "\"scale\": 0"), "\"input.quantization.scale\" must be a positive number");
        assertRejected(edit(INT8_INFO, "\"channels\": 3", "\"channels\": 1"), "\"input.channels\" must be between 3 and 3");
        assertRejected(edit(INT8_INFO, "\"layout\": \"NHWC\"", "\"layout\": \"NCHW\""), "\"input.layout\" must be one of NHWC");
        assertRejected(edit(INT8_INFO, "\"format_version\": 1", "\"format_version\": 2"),
                "\"format_version\" is newer than this app understands (up to 1)");
        assertRejected(edit(INT8_INFO, "\"num_classes\": 10", "\"num_classes\": 0"), "\"output.num_classes\" must be between 1");
        assertRejected(edit(INT8_INFO, Fixtures.SHA, "abc"), "\"tflite_sha256\" must be 64 hexadecimal digits");
        assertRejected(edit(FLOAT_INFO, "\"quantization\": null\n  },\n  \"output\"",
                "\"quantization\": {\"scale\": 0.5, \"zero_point\": 0}\n  },\n  \"output\""),
                "\"input.quantization\" must be null for a float32 tensor, got an object");
        assertRejected(INT8_INFO.substring(0, 100), "model_info.json: invalid JSON at line");
    }
}
