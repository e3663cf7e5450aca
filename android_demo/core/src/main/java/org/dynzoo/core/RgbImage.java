package org.dynzoo.core;

/** An 8-bit RGB image, row-major and interleaved ({@code r, g, b} per pixel): the "bitmap-like" input. */
public final class RgbImage {
    public final int width;
    public final int height;
    /** {@code width * height * 3} bytes, read as unsigned values 0…255. */
    public final byte[] rgb;

    public RgbImage(int width, int height, byte[] rgb) {
        if (width < 1 || height < 1) {
            throw new IllegalArgumentException("image size must be positive, got " + width + "x" + height);
        }
        if (rgb.length != width * height * 3) {
            throw new IllegalArgumentException("rgb must hold width*height*3 = " + (width * height * 3)
                    + " bytes, got " + rgb.length);
        }
        this.width = width;
        this.height = height;
        this.rgb = rgb;
    }

    /** From packed {@code 0xAARRGGBB} pixels, as Android's {@code Bitmap.getPixels} returns them (alpha ignored). */
    public static RgbImage fromArgb(int[] argb, int width, int height) {
        if (argb.length != width * height) {
            throw new IllegalArgumentException("argb must hold width*height = " + (width * height)
                    + " pixels, got " + argb.length);
        }
        byte[] rgb = new byte[argb.length * 3];
        for (int i = 0; i < argb.length; i++) {
            rgb[3 * i] = (byte) (argb[i] >> 16);
            rgb[3 * i + 1] = (byte) (argb[i] >> 8);
            rgb[3 * i + 2] = (byte) argb[i];
        }
        return new RgbImage(width, height, rgb);
    }

    /** Channel {@code c} of pixel ({@code x}, {@code y}), 0…255. */
    public int get(int x, int y, int c) {
        return rgb[(y * width + x) * 3 + c] & 0xff;
    }
}
