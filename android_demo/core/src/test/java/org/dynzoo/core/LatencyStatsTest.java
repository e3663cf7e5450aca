package org.dynzoo.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.junit.Test;

public class LatencyStatsTest {
    @Test
    public void skipsWarmupAndKeepsAWindow() {
        LatencyStats stats = new LatencyStats(3, 1);
        assertTrue(Double.isNaN(stats.mean()));
        stats.add(500); // warm-up: compilation, not counted
        stats.add(10);
        stats.add(30);
        assertEquals(2, stats.count());
        assertEquals(20, stats.mean(), 0);
        assertEquals(20, stats.median(), 0);
        stats.add(20);
        stats.add(100); // pushes out 10
        assertEquals(3, stats.count());
        assertEquals(50, stats.mean(), 0);
        assertEquals(30, stats.median(), 0);
        stats.reset();
        stats.add(7); // warm-up again after a reset
        assertEquals(0, stats.count());
    }
}
