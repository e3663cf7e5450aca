package org.dynzoo.demo

import android.app.Application
import android.graphics.Bitmap
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import org.dynzoo.core.BundleException
import org.dynzoo.core.Classification
import org.dynzoo.core.LatencyStats

/** A timing as shown: the last run and the rolling median (first run after a model change left out). */
data class Timing(val lastMs: Double = Double.NaN, val medianMs: Double = Double.NaN, val runs: Int = 0)

data class UiState(
    val bundles: List<String> = emptyList(),
    val selected: String? = null,
    val settings: RuntimeSettings = RuntimeSettings(),
    val top: List<Classification.Category> = emptyList(),
    val preprocessing: Timing = Timing(),
    val inference: Timing = Timing(),
    /** A missing or malformed bundle, or a runtime failure: shown instead of results. */
    val error: String? = null,
    /** A switch that could not be honoured (e.g. no GPU delegate on this device). */
    val notice: String? = null,
    val galleryImage: Bitmap? = null,
)

/**
 * Holds the current [LiteRtClassifier] and the screen state. All interpreter work — loading a bundle,
 * camera frames, gallery images — runs on one thread, [inferenceExecutor], as the interpreter requires.
 */
class MainViewModel(application: Application) : AndroidViewModel(application) {
    val inferenceExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private val inferenceDispatcher = inferenceExecutor.asCoroutineDispatcher()
    private val assets = application.assets
    private var classifier: LiteRtClassifier? = null
    private val preprocessingStats = LatencyStats(WINDOW, WARMUP)
    private val inferenceStats = LatencyStats(WINDOW, WARMUP)

    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state.asStateFlow()

    init {
        val bundles = BundleAssets.list(assets)
        _state.update {
            it.copy(
                bundles = bundles,
                selected = bundles.firstOrNull(),
                error = if (bundles.isEmpty()) "No model bundles in the app's assets/bundles/ folder. Export one with " +
                    "`dynzoo export … --bundle` and rebuild (android_demo/README.md)." else null,
            )
        }
        reload()
    }

    fun selectBundle(name: String) {
        _state.update { it.copy(selected = name) }
        reload()
    }

    fun updateSettings(settings: RuntimeSettings) {
        _state.update { it.copy(settings = settings) }
        reload()
    }

    /** Classifies one camera frame; called by the camera analyzer on [inferenceExecutor]. */
    fun classifyFrame(bitmap: Bitmap, rotationDegrees: Int) = classify(bitmap, rotationDegrees)

    /** Shows and classifies a picked gallery image. */
    fun classifyGalleryImage(bitmap: Bitmap) {
        _state.update { it.copy(galleryImage = bitmap) }
        viewModelScope.launch(inferenceDispatcher) { classify(bitmap, 0) }
    }

    private fun classify(bitmap: Bitmap, rotationDegrees: Int) {
        val current = classifier ?: return
        try {
            val prediction = current.classify(bitmap, rotationDegrees)
            preprocessingStats.add(prediction.preprocessMs)
            inferenceStats.add(prediction.inferenceMs)
            _state.update {
                it.copy(
                    top = prediction.top,
                    preprocessing = Timing(prediction.preprocessMs, preprocessingStats.median(), preprocessingStats.count()),
                    inference = Timing(prediction.inferenceMs, inferenceStats.median(), inferenceStats.count()),
                )
            }
        } catch (e: RuntimeException) {
            _state.update { it.copy(error = "Inference failed: ${e.message}") }
        }
    }

    /** (Re)creates the classifier for the selected bundle and settings, on the inference thread. */
    private fun reload() {
        val name = _state.value.selected ?: return
        val settings = _state.value.settings
        viewModelScope.launch(inferenceDispatcher) {
            classifier?.close()
            classifier = null
            preprocessingStats.reset()
            inferenceStats.reset()
            _state.update { it.copy(top = emptyList(), preprocessing = Timing(), inference = Timing(), error = null, notice = null) }
            try {
                val loaded = LiteRtClassifier(BundleAssets.load(assets, name), settings)
                classifier = loaded
                _state.update { it.copy(notice = loaded.notice) }
            } catch (e: BundleException) {
                _state.update { it.copy(error = e.message) }
            } catch (e: RuntimeException) { // LiteRT rejects the flatbuffer or the delegate
                _state.update { it.copy(error = "LiteRT could not load bundle \"$name\": ${e.message}") }
            }
        }
    }

    override fun onCleared() {
        inferenceExecutor.execute { classifier?.close() }
        inferenceExecutor.shutdown()
    }

    private companion object {
        const val WINDOW = 30
        const val WARMUP = 1 // the first run after a (re)load compiles delegates and warms caches
    }
}
