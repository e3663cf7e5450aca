package org.dynzoo.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** The class names of {@code labels.txt}: one per line, UTF-8, line i = class index i. */
public final class Labels {
    public static final String FILE_NAME = "labels.txt";

    private Labels() {
    }

    /**
     * Splits {@code text} into labels and checks that there are exactly {@code numClasses} of them. Accepts
     * LF or CRLF line ends and one trailing line end; a UTF-8 byte-order mark is dropped.
     */
    public static List<String> parse(String text, int numClasses) throws BundleException {
        String body = text.startsWith("\uFEFF") ? text.substring(1) : text;
        if (body.endsWith("\n")) {
            body = body.substring(0, body.length() - 1);
        }
        List<String> labels = new ArrayList<>();
        if (!body.isEmpty()) {
            for (String line : body.split("\n", -1)) {
                labels.add(line.endsWith("\r") ? line.substring(0, line.length() - 1) : line);
            }
        }
        if (labels.size() != numClasses) {
            throw new BundleException(FILE_NAME + ": has " + labels.size() + " labels but "
                    + ModelInfo.FILE_NAME + " says output.num_classes = " + numClasses);
        }
        for (int i = 0; i < labels.size(); i++) {
            if (labels.get(i).trim().isEmpty()) {
                throw new BundleException(FILE_NAME + ": line " + (i + 1) + " (class " + i + ") is empty");
            }
        }
        return Collections.unmodifiableList(labels);
    }
}
