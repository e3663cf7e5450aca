package org.dynzoo.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assume.assumeTrue;

import java.awt.image.BufferedImage;
import java.awt.image.Raster;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.junit.Test;

/**
 * The cross-language check of docs/bundle_format.md on bundles that the Python exporter wrote (with
 * {@code golden/}): the bundle loads unchanged, the JVM preprocessing of {@code golden/image.png} reproduces
 * {@code golden/input.bin} (floats to 1e-6, quantized values to ±1) and the JVM top-k of
 * {@code golden/output.bin} equals {@code golden.json}'s.
 *
 * <p>The folders come from the system property {@code dynzoo.goldenBundles} (path-separator separated; set by
 * {@code run_tests.sh BUNDLE_DIR...}); without it the test is skipped. One {@code GOLDEN} line per bundle
 * reports the measured differences.
 */
public class GoldenBundleTest {
    static final double FLOAT_TOLERANCE = 1e-6;
    static final double SCORE_TOLERANCE = 1e-6;

    @Test
    public void reproducesThePythonReference() throws Exception {
        String dirs = System.getProperty("dynzoo.goldenBundles", "");
        assumeTrue("no golden bundles given (run_tests.sh BUNDLE_DIR...)", !dirs.isEmpty());
        for (String dir : dirs.split(File.pathSeparator)) {
            check(new File(dir));
        }
    }

    private static void check(File dir) throws Exception {
        Bundle bundle = Bundle.fromDirectory(dir);
        File golden = new File(dir, "golden");
        Map<?, ?> expected = (Map<?, ?>) Json.parse(new String(
                Files.readAllBytes(new File(golden, "golden.json").toPath()), StandardCharsets.UTF_8));
        assertEquals(bundle.name + ": golden.json was computed for another model", bundle.info.tfliteSha256,
                expected.get("tflite_sha256"));
        ModelInfo.Input in = bundle.info.input;
        assertEquals(in.dtype.jsonName, expected.get("input_dtype"));
        assertEquals(bundle.info.output.dtype.jsonName, expected.get("output_dtype"));
        assertArrayEquals(new double[] {1, in.height, in.width, in.channels}, numbers(expected.get("input_shape")), 0);

        InputTensor tensor = Preprocessor.prepare(readPng(new File(golden, "image.png")), in);
        ByteBuffer reference = ByteBuffer.wrap(Files.readAllBytes(new File(golden, "input.bin").toPath()))
                .order(ByteOrder.LITTLE_ENDIAN);
        assertEquals("input.bin size", tensor.elementCount() * in.dtype.byteSize, reference.capacity());
        double maxDiff = 0;
        int differing = 0;
        for (int i = 0; i < tensor.elementCount(); i++) {
            double want;
            switch (in.dtype) {
                case FLOAT32: want = reference.getFloat(); break;
                case INT8: want = reference.get(); break;
                default: want = reference.get() & 0xff; break;
            }
            double diff = Math.abs(tensor.value(i) - want);
            maxDiff = Math.max(maxDiff, diff);
            differing += diff > 0 ? 1 : 0;
        }
        double tolerance = in.dtype.isQuantized() ? 1 : FLOAT_TOLERANCE;
        assertTrue(bundle.name + ": input differs from input.bin by " + maxDiff + " (> " + tolerance + ")",
                maxDiff <= tolerance);

        ByteBuffer output = ByteBuffer.wrap(Files.readAllBytes(new File(golden, "output.bin").toPath()))
                .order(ByteOrder.LITTLE_ENDIAN);
        float[] scores = Classification.scores(output, bundle.info.output);
        List<?> top = (List<?>) expected.get("top_k");
        List<Classification.Category> ours = Classification.topK(scores, bundle.labels, top.size());
        List<String> ranking = new ArrayList<>();
        for (int r = 0; r < top.size(); r++) {
            double[] pair = numbers(top.get(r));
            assertEquals(bundle.name + " top-" + (r + 1) + " class", (int) pair[0], ours.get(r).index);
            assertEquals(bundle.name + " top-" + (r + 1) + " score", pair[1], ours.get(r).score, SCORE_TOLERANCE);
            ranking.add(ours.get(r).label + "=" + String.format("%.4f", ours.get(r).score));
        }
        System.out.println("GOLDEN " + bundle.name + " input=" + in.dtype.jsonName + " elements=" + tensor.elementCount()
                + " max_abs_diff=" + maxDiff + " differing=" + differing + " output=" + bundle.info.output.dtype.jsonName
                + " top" + top.size() + "_match=true " + ranking);
    }

    /** The 8-bit RGB samples of a PNG, read from the raster so no colour conversion can touch them. */
    static RgbImage readPng(File file) throws IOException {
        BufferedImage image = ImageIO.read(file);
        Raster raster = image.getRaster();
        assertEquals("golden image bands", 3, raster.getNumBands());
        assertEquals("golden image bits", 8, raster.getSampleModel().getSampleSize(0));
        int w = image.getWidth();
        int h = image.getHeight();
        int[] samples = raster.getPixels(0, 0, w, h, (int[]) null);
        byte[] rgb = new byte[samples.length];
        for (int i = 0; i < samples.length; i++) {
            rgb[i] = (byte) samples[i];
        }
        return new RgbImage(w, h, rgb);
    }

    private static double[] numbers(Object list) {
        List<?> values = (List<?>) list;
        double[] out = new double[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (Double) values.get(i);
        }
        return out;
    }
}
