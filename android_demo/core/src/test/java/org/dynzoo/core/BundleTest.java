package org.dynzoo.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class BundleTest {
    @Rule
    public TemporaryFolder temp = new TemporaryFolder();

    private static final byte[] MODEL = "not really a flatbuffer".getBytes(StandardCharsets.US_ASCII);

    private File bundle(String info, String labels) throws IOException {
        File dir = temp.newFolder("digits_int8");
        Files.write(new File(dir, Bundle.MODEL_FILE).toPath(), MODEL);
        Fixtures.write(new File(dir, ModelInfo.FILE_NAME), info.replace(Fixtures.SHA, Bundle.sha256Hex(MODEL)));
        Fixtures.write(new File(dir, Labels.FILE_NAME), labels);
        return dir;
    }

    @Test
    public void loadsAFolder() throws Exception {
        Bundle bundle = Bundle.fromDirectory(bundle(Fixtures.INT8_INFO, Fixtures.DIGIT_LABELS));
        assertEquals("digits_int8", bundle.name);
        assertEquals(10, bundle.labels.size());
        assertEquals("9", bundle.labels.get(9));
        assertTrue(Arrays.equals(MODEL, bundle.model));
        assertEquals(TensorType.INT8, bundle.info.input.dtype);
    }

    @Test
    public void labelCountMustMatchTheClasses() throws Exception {
        assertLoadFails(bundle(Fixtures.INT8_INFO, "0\n1\n2\n"),
                "bundle \"digits_int8\": labels.txt: has 3 labels but model_info.json says output.num_classes = 10");
    }

    @Test
    public void missingFilesAreNamed() throws Exception {
        File dir = bundle(Fixtures.INT8_INFO, Fixtures.DIGIT_LABELS);
        assertTrue(new File(dir, Labels.FILE_NAME).delete());
        assertLoadFails(dir, "bundle \"digits_int8\": missing file labels.txt");
        assertTrue(new File(dir, ModelInfo.FILE_NAME).delete());
        assertLoadFails(dir, "missing file model_info.json");
    }

    @Test
    public void modelMustMatchItsChecksum() throws Exception {
        File dir = bundle(Fixtures.INT8_INFO, Fixtures.DIGIT_LABELS);
        Files.write(new File(dir, Bundle.MODEL_FILE).toPath(), new byte[] {1, 2, 3});
        assertLoadFails(dir, "model.tflite: sha256 is 039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81 but");
    }

    @Test
    public void malformedInfoIsReportedWithTheBundleName() throws Exception {
        File dir = bundle(Fixtures.edit(Fixtures.INT8_INFO, "\"width\": 24", "\"width\": null"), Fixtures.DIGIT_LABELS);
        assertLoadFails(dir, "bundle \"digits_int8\": model_info.json: \"input.width\" must not be null");
        Files.write(new File(dir, ModelInfo.FILE_NAME).toPath(), new byte[] {'{', (byte) 0xff, '}'});
        assertLoadFails(dir, "model_info.json: not valid UTF-8");
    }

    @Test
    public void labelsAcceptCrLfAndRejectEmptyLines() throws BundleException {
        assertEquals(Arrays.asList("cat", "dog"), Labels.parse("\uFEFFcat\r\ndog\r\n", 2));
        assertEquals(Arrays.asList("cat", "dog"), Labels.parse("cat\ndog", 2));
        try {
            Labels.parse("cat\n\ndog\n", 3);
            fail("an empty label was accepted");
        } catch (BundleException e) {
            assertEquals("labels.txt: line 2 (class 1) is empty", e.getMessage());
        }
        try {
            Labels.parse("", 1);
            fail("an empty labels.txt was accepted");
        } catch (BundleException e) {
            assertTrue(e.getMessage().contains("has 0 labels"));
        }
    }

    private static void assertLoadFails(File dir, String expected) {
        try {
            Bundle.fromDirectory(dir);
        } catch (BundleException e) {
            assertTrue("\"" + e.getMessage() + "\" should contain \"" + expected + "\"", e.getMessage().contains(expected));
            return;
        }
        fail("bundle was accepted but should fail with " + expected);
    }
}
