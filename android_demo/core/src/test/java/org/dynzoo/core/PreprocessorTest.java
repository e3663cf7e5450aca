package org.dynzoo.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.junit.Test;

public class PreprocessorTest {
    /** An image whose channel c of pixel (x, y) is {@code f(x, y, c)}. */
    private interface Pixel {
        int value(int x, int y, int c);
    }

    private static RgbImage image(int width, int height, Pixel f) {
        byte[] rgb = new byte[width * height * 3];
        for (int y = 0; y < height; y++) {
            for (int x = 0; x < width; x++) {
                for (int c = 0; c < 3; c++) {
                    rgb[(y * width + x) * 3 + c] = (byte) f.value(x, y, c);
                }
            }
        }
        return new RgbImage(width, height, rgb);
    }

    /** The input section of a bundle with the given geometry and number rules. */
    private static ModelInfo.Input input(String dtype, int height, int width, int shorter, String mean, String std,
            String quantization) throws BundleException {
        String json = Fixtures.edit(Fixtures.edit(Fixtures.edit(Fixtures.edit(Fixtures.edit(Fixtures.edit(
                Fixtures.INT8_INFO,
                "\"height\": 32, \"width\": 24", "\"height\": " + height + ", \"width\": " + width),
                "\"resize_shorter\": 37", "\"resize_shorter\": " + shorter),
                "\"dtype\": \"int8\",\n    \"preprocessing", "\"dtype\": \"" + dtype + "\",\n    \"preprocessing"),
                "[0.485, 0.456, 0.406]", mean),
                "[0.229, 0.224, 0.225]", std),
                "{\"scale\": 0.0187, \"zero_point\": -14}", quantization);
        return ModelInfo.parse(json).input;
    }

    @Test
    public void upsamplesWithHalfPixelCentres() {
        // tf.image.resize([0, 100] → 4 samples, bilinear, half-pixel) = [0, 25, 75, 100].
        RgbImage img = image(2, 2, (x, y, c) -> x == 0 ? 0 : 100 + c);
        float[] out = Preprocessor.resizeAndCrop(img, 4, 4, 4);
        for (int y = 0; y < 4; y++) {
            for (int c = 0; c < 3; c++) {
                float[] row = new float[4];
                for (int x = 0; x < 4; x++) {
                    row[x] = out[(y * 4 + x) * 3 + c];
                }
                float hi = 100 + c;
                assertArrayEquals(new float[] {0, hi / 4, hi * 3 / 4, hi}, row, 1e-5f);
            }
        }
    }

    @Test
    public void downsamplesWithoutAntialiasing() {
        // 4 → 2 samples at input coordinates 0.5 and 2.5: averages of neighbours, no wider filter.
        RgbImage img = image(4, 4, (x, y, c) -> 10 * x + 50 * y + c);
        float[] out = Preprocessor.resizeAndCrop(img, 2, 2, 2);
        assertArrayEquals(new float[] {
            30, 31, 32, 50, 51, 52,
            130, 131, 132, 150, 151, 152}, out, 0f);
    }

    @Test
    public void cropsTheCentre() {
        // 8×4 already has shorter side 4: no interpolation, crop columns 2…5 exactly.
        RgbImage img = image(8, 4, (x, y, c) -> 30 * x + y + c);
        float[] out = Preprocessor.resizeAndCrop(img, 4, 4, 4);
        for (int y = 0; y < 4; y++) {
            for (int x = 0; x < 4; x++) {
                for (int c = 0; c < 3; c++) {
                    assertEquals(30 * (x + 2) + y + c, out[(y * 4 + x) * 3 + c], 0f);
                }
            }
        }
        // Odd margins round the offset down: 7 wide, crop 4 → columns 1…4.
        float[] odd = Preprocessor.resizeAndCrop(image(7, 4, (x, y, c) -> x), 4, 1, 4);
        assertArrayEquals(new float[] {1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4}, odd, 0f);
    }

    @Test
    public void roundsTheLongerSideHalfUp() {
        assertArrayEquals(new int[] {5, 3}, Preprocessor.resizedSize(3, 2, 3)); // 4.5 → 5
        assertArrayEquals(new int[] {32, 43}, Preprocessor.resizedSize(45, 61, 32)); // 43.38 → 43
        assertArrayEquals(new int[] {47, 35}, Preprocessor.resizedSize(61, 45, 35)); // 47.44 → 47
        assertArrayEquals(new int[] {7, 7}, Preprocessor.resizedSize(30, 30, 7));
    }

    @Test
    public void normalisesPerChannel() throws BundleException {
        ModelInfo.Input in = input("float32", 2, 2, 2, "[0.5, 0.25, 0.0]", "[0.5, 0.25, 2.0]", "null");
        RgbImage img = image(2, 2, (x, y, c) -> 51 * (x + 2 * y) + c);
        InputTensor tensor = Preprocessor.prepare(img, in);
        assertArrayEquals(new int[] {1, 2, 2, 3}, tensor.shape);
        float[] mean = {0.5f, 0.25f, 0f};
        float[] std = {0.5f, 0.25f, 2f};
        for (int i = 0; i < 12; i++) {
            int p = 51 * (i / 3) + i % 3;
            assertEquals((p / 255f - mean[i % 3]) / std[i % 3], tensor.floats[i], 0f);
        }
        ByteBuffer le = tensor.toByteBuffer(ByteOrder.LITTLE_ENDIAN);
        assertEquals(48, le.capacity());
        assertEquals(tensor.floats[5], le.getFloat(20), 0f);
    }

    @Test
    public void quantizesRoundingHalfAwayFromZeroAndClamps() {
        Quantization half = new Quantization(0.5f, 0);
        assertEquals(1, half.quantize(0.25f, TensorType.INT8)); // 0.5 → 1
        assertEquals(-1, half.quantize(-0.25f, TensorType.INT8)); // -0.5 → -1
        assertEquals(2, half.quantize(0.75f, TensorType.INT8)); // 1.5 → 2
        assertEquals(1, half.quantize(0.74f, TensorType.INT8)); // 1.48 → 1
        assertEquals(127, half.quantize(100f, TensorType.INT8));
        assertEquals(-128, half.quantize(-100f, TensorType.INT8));
        Quantization unsigned = new Quantization(0.5f, 128);
        assertEquals(127, unsigned.quantize(-0.25f, TensorType.UINT8));
        assertEquals(255, unsigned.quantize(1000f, TensorType.UINT8));
        assertEquals(0, unsigned.quantize(-1000f, TensorType.UINT8));
    }

    @Test
    public void quantizedInputsForInt8AndUint8() throws BundleException {
        RgbImage img = image(2, 2, (x, y, c) -> 60 * (x + 2 * y) + c);
        // scale 1/255, mean 0, std 1: q = p + zero_point.
        ModelInfo.Input int8 = input("int8", 2, 2, 2, "[0, 0, 0]", "[1, 1, 1]",
                "{\"scale\": 0.00392156862745098, \"zero_point\": -128}");
        ModelInfo.Input uint8 = input("uint8", 2, 2, 2, "[0, 0, 0]", "[1, 1, 1]",
                "{\"scale\": 0.00392156862745098, \"zero_point\": 0}");
        InputTensor q8 = Preprocessor.prepare(img, int8);
        InputTensor u8 = Preprocessor.prepare(img, uint8);
        for (int i = 0; i < 12; i++) {
            int p = 60 * (i / 3) + i % 3;
            assertEquals(p - 128, q8.quantized[i]);
            assertEquals(p, u8.quantized[i]);
        }
        ByteBuffer raw = u8.toByteBuffer(ByteOrder.LITTLE_ENDIAN);
        assertEquals(12, raw.capacity());
        assertEquals(182, raw.get(11) & 0xff);
        assertEquals(182 - 128, q8.toByteBuffer(ByteOrder.LITTLE_ENDIAN).get(11));
    }

    @Test
    public void argbPixelsKeepRgbOrder() {
        RgbImage img = RgbImage.fromArgb(new int[] {0xff102030, 0x80fffe01}, 2, 1);
        assertEquals(0x10, img.get(0, 0, 0));
        assertEquals(0x20, img.get(0, 0, 1));
        assertEquals(0x30, img.get(0, 0, 2));
        assertEquals(0xff, img.get(1, 0, 0));
        assertEquals(0xfe, img.get(1, 0, 1));
        assertEquals(0x01, img.get(1, 0, 2));
    }

    @Test(expected = IllegalArgumentException.class)
    public void rejectsAWrongBufferSize() {
        new RgbImage(2, 2, new byte[11]);
    }
}
