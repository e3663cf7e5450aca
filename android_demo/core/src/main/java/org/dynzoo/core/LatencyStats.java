package org.dynzoo.core;

import java.util.Arrays;

/**
 * Rolling latency statistics over the last {@code window} runs, with the first {@code warmup} runs (delegate
 * compilation, caches) left out, as the demo shows them for preprocessing and inference separately.
 */
public final class LatencyStats {
    private final double[] ring;
    private final int warmup;
    private int seen;
    private int stored;
    private int next;

    public LatencyStats(int window, int warmup) {
        if (window < 1) {
            throw new IllegalArgumentException("window must be at least 1, got " + window);
        }
        if (warmup < 0) {
            throw new IllegalArgumentException("warmup must be at least 0, got " + warmup);
        }
        this.ring = new double[window];
        this.warmup = warmup;
    }

    /** Records one run of {@code millis} milliseconds. */
    public synchronized void add(double millis) {
        if (seen++ < warmup) {
            return;
        }
        ring[next] = millis;
        next = (next + 1) % ring.length;
        stored = Math.min(stored + 1, ring.length);
    }

    /** Number of runs in the window (warm-up excluded). */
    public synchronized int count() {
        return stored;
    }

    /** Mean over the window; NaN before the first counted run. */
    public synchronized double mean() {
        if (stored == 0) {
            return Double.NaN;
        }
        double sum = 0;
        for (int i = 0; i < stored; i++) {
            sum += ring[i];
        }
        return sum / stored;
    }

    /** Median over the window; NaN before the first counted run. */
    public synchronized double median() {
        if (stored == 0) {
            return Double.NaN;
        }
        double[] sorted = Arrays.copyOf(ring, stored);
        Arrays.sort(sorted);
        int mid = stored / 2;
        return stored % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /** Forgets everything (after switching model or delegate). */
    public synchronized void reset() {
        seen = 0;
        stored = 0;
        next = 0;
    }
}
