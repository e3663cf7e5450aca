package org.dynzoo.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;
import org.junit.Test;

public class ClassificationTest {
    private static final List<String> LABELS = Arrays.asList("a", "b", "c", "d");

    private static ModelInfo.Output output(String dtype, String activation, String quantization) throws BundleException {
        String json = Fixtures.edit(Fixtures.edit(Fixtures.edit(Fixtures.INT8_INFO,
                "\"num_classes\": 10", "\"num_classes\": 4"),
                "\"dtype\": \"int8\",\n    \"activation\": \"softmax\"",
                "\"dtype\": \"" + dtype + "\",\n    \"activation\": \"" + activation + "\""),
                "{\"scale\": 0.00390625, \"zero_point\": -128}", quantization);
        return ModelInfo.parse(json).output;
    }

    @Test
    public void dequantizesInt8Probabilities() throws BundleException {
        ModelInfo.Output out = output("int8", "softmax", "{\"scale\": 0.00390625, \"zero_point\": -128}");
        ByteBuffer raw = ByteBuffer.wrap(new byte[] {-128, 127, 0, -64});
        assertArrayEquals(new float[] {0f, 255 / 256f, 0.5f, 0.25f}, Classification.scores(raw, out), 0f);
    }

    @Test
    public void dequantizesUint8AndSoftmaxesLogits() throws BundleException {
        ModelInfo.Output out = output("uint8", "none", "{\"scale\": 0.5, \"zero_point\": 10}");
        ByteBuffer raw = ByteBuffer.wrap(new byte[] {10, 12, (byte) 200, 8});
        float[] logits = {0f, 1f, 95f, -1f};
        assertArrayEquals(Classification.softmax(logits), Classification.scores(raw, out), 0f);
        double sum = 0;
        for (float s : Classification.softmax(logits)) {
            sum += s;
        }
        assertEquals(1.0, sum, 1e-6);
    }

    @Test
    public void readsFloatOutputsInTheBufferOrder() throws BundleException {
        ModelInfo.Output out = output("float32", "softmax", "null");
        ByteBuffer raw = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
        raw.putFloat(0.1f).putFloat(0.2f).putFloat(0.3f).putFloat(0.4f).rewind();
        assertArrayEquals(new float[] {0.1f, 0.2f, 0.3f, 0.4f}, Classification.scores(raw, out), 0f);
    }

    @Test
    public void softmaxMatchesTheDefinitionAndIsStable() {
        float[] p = Classification.softmax(new float[] {1f, 2f, 3f});
        double z = Math.exp(1) + Math.exp(2) + Math.exp(3);
        assertArrayEquals(new float[] {(float) (Math.exp(1) / z), (float) (Math.exp(2) / z), (float) (Math.exp(3) / z)},
                p, 1e-7f);
        float[] big = Classification.softmax(new float[] {1000f, 1000f});
        assertArrayEquals(new float[] {0.5f, 0.5f}, big, 0f);
    }

    @Test
    public void topKRanksByScoreThenIndex() {
        List<Classification.Category> top = Classification.topK(new float[] {0.1f, 0.4f, 0.1f, 0.4f}, LABELS, 3);
        assertEquals(3, top.size());
        assertEquals(1, top.get(0).index);
        assertEquals("b", top.get(0).label);
        assertEquals(3, top.get(1).index);
        assertEquals(0, top.get(2).index);
        assertEquals(0.1f, top.get(2).score, 0f);
        assertEquals(4, Classification.topK(new float[] {1, 2, 3, 4}, LABELS, 10).size());
    }

    @Test(expected = IllegalArgumentException.class)
    public void topKNeedsPositiveK() {
        Classification.topK(new float[] {1, 2, 3, 4}, LABELS, 0);
    }

    @Test(expected = IllegalArgumentException.class)
    public void scoresNeedTheWholeOutput() throws BundleException {
        Classification.scores(ByteBuffer.allocate(3), output("int8", "softmax", "{\"scale\": 0.5, \"zero_point\": 0}"));
    }
}
