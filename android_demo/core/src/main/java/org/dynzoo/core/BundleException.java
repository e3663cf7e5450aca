package org.dynzoo.core;

/** A bundle (model.tflite, labels.txt, model_info.json) that is missing, malformed or inconsistent. */
public class BundleException extends Exception {
    private static final long serialVersionUID = 1L;

    public BundleException(String message) {
        super(message);
    }

    public BundleException(String message, Throwable cause) {
        super(message, cause);
    }
}
