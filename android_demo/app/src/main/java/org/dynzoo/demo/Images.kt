package org.dynzoo.demo

import android.graphics.Bitmap
import android.graphics.Matrix
import org.dynzoo.core.RgbImage

/** This bitmap turned upright by [rotationDegrees] (as CameraX reports it) as the core's RGB image. */
fun Bitmap.toRgbImage(rotationDegrees: Int = 0): RgbImage {
    val upright = if (rotationDegrees % 360 == 0) this else
        Bitmap.createBitmap(this, 0, 0, width, height, Matrix().apply { postRotate(rotationDegrees.toFloat()) }, false)
    val argb = IntArray(upright.width * upright.height)
    upright.getPixels(argb, 0, upright.width, 0, 0, upright.width, upright.height)
    return RgbImage.fromArgb(argb, upright.width, upright.height)
}
