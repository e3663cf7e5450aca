package org.dynzoo.demo

import android.graphics.Bitmap
import android.os.SystemClock
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.dynzoo.core.Bundle
import org.dynzoo.core.BundleException
import org.dynzoo.core.Classification
import org.dynzoo.core.InputTensor
import org.dynzoo.core.Preprocessor
import org.dynzoo.core.Quantization
import org.dynzoo.core.TensorType
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate

/** The runtime switches of the settings panel. */
data class RuntimeSettings(val threads: Int = 4, val xnnpack: Boolean = true, val gpu: Boolean = false)

/** One classified frame: the top classes and the two timings, in milliseconds. */
data class Prediction(val top: List<Classification.Category>, val preprocessMs: Double, val inferenceMs: Double)

/**
 * Runs one [Bundle] with the LiteRT Interpreter. Everything that is not Android — reading the bundle,
 * preprocessing, dequantization and top-k — is the plain-JVM core's; this class only feeds the interpreter.
 *
 * Not thread-safe: use it from one thread (the view model's inference thread).
 */
class LiteRtClassifier(private val bundle: Bundle, settings: RuntimeSettings) : AutoCloseable {
    private val gpuDelegate: GpuDelegate?
    private val interpreter: Interpreter
    private val input: ByteBuffer
    private val output: ByteBuffer

    /** Set when a requested switch could not be honoured (shown to the user). */
    val notice: String?

    init {
        val options = Interpreter.Options()
            .setNumThreads(settings.threads)
            .setUseXNNPACK(settings.xnnpack)
        val compatibility = CompatibilityList()
        gpuDelegate = if (settings.gpu && compatibility.isDelegateSupportedOnThisDevice) {
            GpuDelegate(compatibility.bestOptionsForThisDevice)
        } else {
            null
        }
        gpuDelegate?.let { options.addDelegate(it) }
        notice = if (settings.gpu && gpuDelegate == null) "The GPU delegate is not supported on this device: running on the CPU." else null

        val model = ByteBuffer.allocateDirect(bundle.model.size).order(ByteOrder.nativeOrder())
        model.put(bundle.model).rewind()
        interpreter = Interpreter(model, options)
        try {
            checkTensors()
        } catch (e: BundleException) {
            close()
            throw e
        }
        val info = bundle.info
        input = ByteBuffer.allocateDirect(info.input.elementCount() * info.input.dtype.byteSize).order(ByteOrder.nativeOrder())
        output = ByteBuffer.allocateDirect(info.output.numClasses * info.output.dtype.byteSize).order(ByteOrder.nativeOrder())
    }

    /** Preprocesses [bitmap] (turned by [rotationDegrees]) with the core, runs the model, ranks the classes. */
    fun classify(bitmap: Bitmap, rotationDegrees: Int, k: Int = 3): Prediction {
        val start = SystemClock.elapsedRealtimeNanos()
        val tensor = Preprocessor.prepare(bitmap.toRgbImage(rotationDegrees), bundle.info.input)
        val prepared = SystemClock.elapsedRealtimeNanos()
        val raw = run(tensor)
        val done = SystemClock.elapsedRealtimeNanos()
        val top = Classification.topK(Classification.scores(raw, bundle.info.output), bundle.labels, k)
        return Prediction(top, (prepared - start) / 1e6, (done - prepared) / 1e6)
    }

    /** The model's raw output for [tensor], positioned at its start (valid until the next call). */
    fun run(tensor: InputTensor): ByteBuffer {
        input.clear()
        tensor.writeTo(input)
        input.rewind()
        output.clear()
        interpreter.run(input, output)
        output.rewind()
        return output
    }

    override fun close() {
        interpreter.close()
        gpuDelegate?.close()
    }

    /** model_info.json must describe the model it ships with: shapes, types and quantization. */
    private fun checkTensors() {
        val info = bundle.info
        val expectedInput = intArrayOf(1, info.input.height, info.input.width, info.input.channels)
        checkTensor("input", interpreter.getInputTensor(0), expectedInput, info.input.dtype, info.input.quantization)
        checkTensor("output", interpreter.getOutputTensor(0), intArrayOf(1, info.output.numClasses), info.output.dtype,
            info.output.quantization)
    }

    private fun checkTensor(what: String, tensor: Tensor, shape: IntArray, dtype: TensorType, quantization: Quantization?) {
        val actualType = when (tensor.dataType()) {
            DataType.FLOAT32 -> TensorType.FLOAT32
            DataType.INT8 -> TensorType.INT8
            DataType.UINT8 -> TensorType.UINT8
            else -> null
        }
        val problem = when {
            !tensor.shape().contentEquals(shape) ->
                "shape ${tensor.shape().contentToString()} but model_info.json says ${shape.contentToString()}"
            actualType != dtype -> "type ${tensor.dataType()} but model_info.json says ${dtype.jsonName}"
            quantization != null && !sameQuantization(tensor.quantizationParams(), quantization) ->
                "quantization scale=${tensor.quantizationParams().scale}, zero_point=" +
                    "${tensor.quantizationParams().zeroPoint} but model_info.json says $quantization"
            else -> null
        }
        if (problem != null) {
            throw BundleException("bundle \"${bundle.name}\": model.tflite $what has $problem")
        }
    }

    private fun sameQuantization(actual: Tensor.QuantizationParams, expected: Quantization): Boolean =
        actual.zeroPoint == expected.zeroPoint && Math.abs(actual.scale - expected.scale) <= 1e-6 * expected.scale
}
