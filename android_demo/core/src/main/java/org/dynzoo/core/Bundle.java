package org.dynzoo.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.List;

/**
 * A loaded and cross-checked deployable bundle: the model bytes, its {@link ModelInfo} and its labels.
 * Loading checks everything an app can check before handing the model to LiteRT: the JSON contract, the
 * label count against {@code output.num_classes}, and the model's sha256 against {@code tflite_sha256}.
 */
public final class Bundle {
    public static final String MODEL_FILE = "model.tflite";

    /** Where the three files come from: a folder, an Android asset directory, a zip... */
    public interface Files {
        /** The bytes of {@code fileName}; a {@link FileNotFoundException} when it does not exist. */
        byte[] read(String fileName) throws IOException;
    }

    public final String name;
    public final ModelInfo info;
    public final List<String> labels;
    public final byte[] model;

    private Bundle(String name, ModelInfo info, List<String> labels, byte[] model) {
        this.name = name;
        this.info = info;
        this.labels = labels;
        this.model = model;
    }

    /** Loads the bundle called {@code name} (used in messages) from {@code files}. */
    public static Bundle load(String name, Files files) throws BundleException {
        try {
            ModelInfo info = ModelInfo.parse(utf8(ModelInfo.FILE_NAME, read(files, ModelInfo.FILE_NAME)));
            List<String> labels = Labels.parse(utf8(Labels.FILE_NAME, read(files, Labels.FILE_NAME)),
                    info.output.numClasses);
            byte[] model = read(files, MODEL_FILE);
            String sha = sha256Hex(model);
            if (!sha.equals(info.tfliteSha256)) {
                throw new BundleException(MODEL_FILE + ": sha256 is " + sha + " but " + ModelInfo.FILE_NAME
                        + " expects " + info.tfliteSha256 + " (the files come from different exports)");
            }
            return new Bundle(name, info, labels, model);
        } catch (BundleException e) {
            throw new BundleException("bundle \"" + name + "\": " + e.getMessage(), e);
        }
    }

    /** Loads a bundle folder, named after the folder. */
    public static Bundle fromDirectory(final File directory) throws BundleException {
        return load(directory.getName(), new Files() {
            @Override
            public byte[] read(String fileName) throws IOException {
                try (InputStream in = new FileInputStream(new File(directory, fileName))) {
                    return readAll(in);
                }
            }
        });
    }

    /** Reads a whole stream (Android assets come as streams). */
    public static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[1 << 16];
        int n;
        while ((n = in.read(buffer)) > 0) {
            out.write(buffer, 0, n);
        }
        return out.toByteArray();
    }

    static String sha256Hex(byte[] data) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256").digest(data);
            StringBuilder hex = new StringBuilder();
            for (byte b : digest) {
                hex.append(String.format("%02x", b & 0xff));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every Java and Android runtime", e);
        }
    }

    private static byte[] read(Files files, String fileName) throws BundleException {
        try {
            return files.read(fileName);
        } catch (FileNotFoundException e) {
            throw new BundleException("missing file " + fileName, e);
        } catch (IOException e) {
            throw new BundleException("cannot read " + fileName + ": " + e.getMessage(), e);
        }
    }

    private static String utf8(String fileName, byte[] bytes) throws BundleException {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(java.nio.ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw new BundleException(fileName + ": not valid UTF-8", e);
        }
    }
}
