package org.dynzoo.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class JsonTest {
    @Test
    public void parsesEveryValueKind() throws BundleException {
        Map<?, ?> root = (Map<?, ?>) Json.parse(
                " {\"a\": [1, -2.5e2, 0.125], \"s\": \"x\\\"y\\\\z\\n\\u00e9\", \"t\": true, \"f\": false, \"n\": null,"
                        + " \"o\": {}} ");
        assertEquals(Arrays.asList(1.0, -250.0, 0.125), root.get("a"));
        assertEquals("x\"y\\z\né", root.get("s"));
        assertEquals(Boolean.TRUE, root.get("t"));
        assertEquals(Boolean.FALSE, root.get("f"));
        assertTrue(root.containsKey("n"));
        assertNull(root.get("n"));
        assertTrue(((Map<?, ?>) root.get("o")).isEmpty());
        assertEquals(Arrays.asList("a", "s", "t", "f", "n", "o"), Arrays.asList(root.keySet().toArray()));
        assertEquals(0, ((List<?>) Json.parse("[]")).size());
    }

    @Test
    public void rejectsMalformedTextWithItsPosition() {
        assertError("{\"a\": 1,}", "line 1, column 9");
        assertError("{\"a\": 1}\n x", "line 2, column 2: unexpected text after the JSON value");
        assertError("{\"a\": 1, \"a\": 2}", "duplicate key \"a\"");
        assertError("{\"a\": \"open", "unterminated string");
        assertError("[01]", "expected ',' or ']'");
        assertError("[1.]", "digits must follow '.'");
        assertError("{'a': 1}", "expected a quoted key");
        assertError("[tru]", "unexpected token");
        assertError("", "unexpected end of input");
        assertError("[NaN]", "unexpected character 'N'");
        assertError("[\"\\u-001\"]", "four hexadecimal digits expected");
        assertError("[\"\\u12\"]", "four hexadecimal digits expected");
    }

    private static void assertError(String text, String expected) {
        try {
            Json.parse(text);
        } catch (BundleException e) {
            assertTrue("\"" + e.getMessage() + "\" should contain \"" + expected + "\"",
                    e.getMessage().contains(expected));
            return;
        }
        fail("accepted malformed JSON " + text);
    }
}
