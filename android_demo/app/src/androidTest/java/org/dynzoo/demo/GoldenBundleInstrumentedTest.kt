package org.dynzoo.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.dynzoo.core.Classification
import org.dynzoo.core.Json
import org.dynzoo.core.Preprocessor
import org.dynzoo.core.TensorType
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * On the phone, for every bundle in the app's assets that carries `golden/` (written by
 * `dynzoo export … --bundle --golden`): Android's PNG decoder + the core's preprocessing reproduce
 * `golden/input.bin` (floats to 1e-6, quantized values to ±1), and LiteRT on the device gives the same
 * top-1 class as the Python reference, with raw outputs close to `golden/output.bin`.
 *
 * Run: `./gradlew :app:connectedDebugAndroidTest` with a phone attached (android_demo/README.md).
 */
@RunWith(AndroidJUnit4::class)
class GoldenBundleInstrumentedTest {
    private val assets = InstrumentationRegistry.getInstrumentation().targetContext.assets

    @Test
    fun bundlesReproduceTheirGoldenFiles() {
        val names = BundleAssets.list(assets).filter { assets.list("${BundleAssets.ROOT}/$it/golden").orEmpty().isNotEmpty() }
        assumeTrue("no bundle with golden/ files in assets/bundles", names.isNotEmpty())
        names.forEach(::verify)
    }

    private fun verify(name: String) {
        val bundle = BundleAssets.load(assets, name)
        val info = bundle.info
        val png = BundleAssets.read(assets, name, "golden/image.png")
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
            inScaled = false
        }
        val bitmap = BitmapFactory.decodeByteArray(png, 0, png.size, options)
        val tensor = Preprocessor.prepare(bitmap.toRgbImage(), info.input)

        val expectedInput = littleEndian(BundleAssets.read(assets, name, "golden/input.bin"))
        val inputTolerance = if (info.input.dtype.isQuantized) 1.0 else 1e-6
        for (i in 0 until tensor.elementCount()) {
            val want = value(expectedInput, info.input.dtype)
            assertTrue("$name: input[$i] = ${tensor.value(i)}, golden $want",
                Math.abs(tensor.value(i) - want) <= inputTolerance)
        }

        // XNNPACK off and one thread, like the Python reference; other CPUs may still round differently.
        LiteRtClassifier(bundle, RuntimeSettings(threads = 1, xnnpack = false, gpu = false)).use { classifier ->
            val raw = classifier.run(tensor)
            val expectedOutput = littleEndian(BundleAssets.read(assets, name, "golden/output.bin"))
            val outputTolerance = if (info.output.dtype.isQuantized) 1.0 else 1e-3
            val ours = raw.duplicate().order(raw.order())
            for (i in 0 until info.output.numClasses) {
                val got = value(ours, info.output.dtype)
                val want = value(expectedOutput, info.output.dtype)
                assertTrue("$name: output[$i] = $got, golden $want", Math.abs(got - want) <= outputTolerance)
            }
            val top = Classification.topK(Classification.scores(raw, info.output), bundle.labels, 1)
            val golden = Json.parse(String(BundleAssets.read(assets, name, "golden/golden.json"))) as Map<*, *>
            val goldenTop1 = ((golden["top_k"] as List<*>)[0] as List<*>)[0] as Double
            assertEquals("$name: top-1 class", goldenTop1.toInt(), top[0].index)
        }
    }

    private fun littleEndian(bytes: ByteArray): ByteBuffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)

    private fun value(buffer: ByteBuffer, dtype: TensorType): Double = when (dtype) {
        TensorType.FLOAT32 -> buffer.float.toDouble()
        TensorType.INT8 -> buffer.get().toDouble()
        TensorType.UINT8 -> (buffer.get().toInt() and 0xff).toDouble()
    }
}
