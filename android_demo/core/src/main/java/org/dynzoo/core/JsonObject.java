package org.dynzoo.core;

import java.util.List;
import java.util.Map;

/**
 * Typed, path-aware access to one JSON object of a bundle file: every failure names the file, the full key
 * path (e.g. {@code "input.quantization.scale"}) and what was expected, so a broken bundle is easy to fix.
 */
final class JsonObject {
    private final String file;
    private final String path;
    private final Map<String, Object> map;

    private JsonObject(String file, String path, Map<String, Object> map) {
        this.file = file;
        this.path = path;
        this.map = map;
    }

    /** The top-level object of {@code file}'s text. */
    @SuppressWarnings("unchecked")
    static JsonObject parse(String file, String text) throws BundleException {
        Object root;
        try {
            root = Json.parse(text);
        } catch (BundleException e) {
            throw new BundleException(file + ": " + e.getMessage(), e);
        }
        if (!(root instanceof Map)) {
            throw new BundleException(file + ": the top level must be a JSON object, got " + describe(root));
        }
        return new JsonObject(file, "", (Map<String, Object>) root);
    }

    boolean isNull(String key) {
        return map.get(key) == null;
    }

    /** The raw value under {@code key} (null when absent), for error messages. */
    Object raw(String key) {
        return map.get(key);
    }

    @SuppressWarnings("unchecked")
    JsonObject object(String key) throws BundleException {
        Object value = require(key);
        if (!(value instanceof Map)) {
            throw wrongType(key, "an object", value);
        }
        return new JsonObject(file, qualified(key), (Map<String, Object>) value);
    }

    String string(String key) throws BundleException {
        Object value = require(key);
        if (!(value instanceof String)) {
            throw wrongType(key, "a string", value);
        }
        return (String) value;
    }

    /** An optional string: {@code fallback} when the key is absent or null. */
    String string(String key, String fallback) throws BundleException {
        return isNull(key) ? fallback : string(key);
    }

    String choice(String key, String... allowed) throws BundleException {
        String value = string(key);
        for (String option : allowed) {
            if (option.equals(value)) {
                return value;
            }
        }
        throw invalid(key, "must be one of " + String.join(", ", allowed), value);
    }

    boolean bool(String key) throws BundleException {
        Object value = require(key);
        if (!(value instanceof Boolean)) {
            throw wrongType(key, "true or false", value);
        }
        return (Boolean) value;
    }

    double number(String key) throws BundleException {
        Object value = require(key);
        if (!(value instanceof Double)) {
            throw wrongType(key, "a number", value);
        }
        return (Double) value;
    }

    double positiveNumber(String key) throws BundleException {
        double value = number(key);
        if (!(value > 0) || Double.isInfinite(value)) {
            throw invalid(key, "must be a positive number", value);
        }
        return value;
    }

    int integer(String key, int min, int max) throws BundleException {
        Object value = require(key);
        if (!(value instanceof Double) || ((Double) value) != Math.rint((Double) value)) {
            throw wrongType(key, "an integer", value);
        }
        double d = (Double) value;
        if (d < min || d > max) {
            throw invalid(key, "must be between " + min + " and " + max, value);
        }
        return (int) d;
    }

    float[] numbers(String key, int length) throws BundleException {
        Object value = require(key);
        if (!(value instanceof List)) {
            throw wrongType(key, "a list of " + length + " numbers", value);
        }
        List<?> list = (List<?>) value;
        if (list.size() != length) {
            throw invalid(key, "must have " + length + " entries (one per channel), got " + list.size(), value);
        }
        float[] out = new float[length];
        for (int i = 0; i < length; i++) {
            if (!(list.get(i) instanceof Double)) {
                throw wrongType(key + "[" + i + "]", "a number", list.get(i));
            }
            out[i] = ((Double) list.get(i)).floatValue();
        }
        return out;
    }

    BundleException invalid(String key, String rule, Object value) {
        return new BundleException(file + ": \"" + qualified(key) + "\" " + rule + ", got " + describe(value));
    }

    private Object require(String key) throws BundleException {
        if (!map.containsKey(key)) {
            throw new BundleException(file + ": missing required key \"" + qualified(key) + "\"");
        }
        Object value = map.get(key);
        if (value == null) {
            throw new BundleException(file + ": \"" + qualified(key) + "\" must not be null");
        }
        return value;
    }

    private BundleException wrongType(String key, String expected, Object value) {
        return new BundleException(file + ": \"" + qualified(key) + "\" must be " + expected + ", got "
                + describe(value));
    }

    private String qualified(String key) {
        return path.isEmpty() ? key : path + "." + key;
    }

    private static String describe(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof String) {
            return "the string \"" + value + "\"";
        }
        if (value instanceof Double) {
            double d = (Double) value;
            return d == Math.rint(d) && Math.abs(d) < 1e15 ? String.valueOf((long) d) : String.valueOf(d);
        }
        if (value instanceof Map) {
            return "an object";
        }
        if (value instanceof List) {
            return "a list";
        }
        return String.valueOf(value);
    }
}
