package org.dynzoo.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.BitmapFactory
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.aspectRatio
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.DropdownMenu
import androidx.compose.material3.DropdownMenuItem
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Slider
import androidx.compose.material3.Switch
import androidx.compose.material3.Tab
import androidx.compose.material3.TabRow
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import androidx.core.content.ContextCompat
import java.util.Locale
import org.dynzoo.core.Classification

/** The whole app: model picker, camera/gallery tabs, top-3 results, timings and runtime switches. */
@Composable
fun DemoScreen(viewModel: MainViewModel) {
    val state by viewModel.state.collectAsState()
    var tab by remember { mutableStateOf(0) }
    Column(
        modifier = Modifier.fillMaxSize().verticalScroll(rememberScrollState()).padding(12.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text("dynzoo demo", style = MaterialTheme.typography.headlineSmall)
        ModelPicker(state.bundles, state.selected, viewModel::selectBundle)
        TabRow(selectedTabIndex = tab) {
            Tab(selected = tab == 0, onClick = { tab = 0 }, text = { Text("Camera") })
            Tab(selected = tab == 1, onClick = { tab = 1 }, text = { Text("Gallery") })
        }
        if (tab == 0) CameraTab(viewModel) else GalleryTab(state, viewModel)
        state.error?.let { Message(it, isError = true) }
        state.notice?.let { Message(it, isError = false) }
        if (state.error == null) Results(state)
        SettingsPanel(state.settings, viewModel::updateSettings)
    }
}

@Composable
private fun ModelPicker(bundles: List<String>, selected: String?, onSelect: (String) -> Unit) {
    var open by remember { mutableStateOf(false) }
    Box {
        OutlinedButton(onClick = { open = true }, enabled = bundles.isNotEmpty()) {
            Text("Model: ${selected ?: "none"}")
        }
        DropdownMenu(expanded = open, onDismissRequest = { open = false }) {
            bundles.forEach { name ->
                DropdownMenuItem(text = { Text(name) }, onClick = { open = false; onSelect(name) })
            }
        }
    }
}

@Composable
private fun CameraTab(viewModel: MainViewModel) {
    val context = LocalContext.current
    var granted by remember {
        mutableStateOf(ContextCompat.checkSelfPermission(context, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED)
    }
    val request = rememberLauncherForActivityResult(ActivityResultContracts.RequestPermission()) { granted = it }
    if (granted) {
        CameraPreview(
            analysisExecutor = viewModel.inferenceExecutor,
            onFrame = viewModel::classifyFrame,
            modifier = Modifier.fillMaxWidth().aspectRatio(3f / 4f),
        )
    } else {
        Button(onClick = { request.launch(Manifest.permission.CAMERA) }) { Text("Allow the camera") }
    }
}

@Composable
private fun GalleryTab(state: UiState, viewModel: MainViewModel) {
    val context = LocalContext.current
    val pick = rememberLauncherForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        val bitmap = uri?.let { context.contentResolver.openInputStream(it)?.use(BitmapFactory::decodeStream) }
        if (bitmap != null) viewModel.classifyGalleryImage(bitmap)
    }
    Button(onClick = { pick.launch("image/*") }) { Text("Pick an image") }
    state.galleryImage?.let {
        Image(it.asImageBitmap(), contentDescription = "picked image", contentScale = ContentScale.Fit,
            modifier = Modifier.fillMaxWidth().aspectRatio(it.width.toFloat() / it.height))
    }
}

@Composable
private fun Results(state: UiState) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(6.dp)) {
            if (state.top.isEmpty()) Text("Point the camera at something or pick an image.")
            state.top.forEach { TopClass(it) }
            TimingRow("Preprocessing", state.preprocessing)
            TimingRow("Inference", state.inference)
        }
    }
}

@Composable
private fun TopClass(category: Classification.Category) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        Text(category.label, modifier = Modifier.weight(1f))
        LinearProgressIndicator(progress = category.score.coerceIn(0f, 1f), modifier = Modifier.width(96.dp))
        Text(String.format(Locale.ROOT, " %5.1f %%", 100 * category.score))
    }
}

@Composable
private fun TimingRow(name: String, timing: Timing) {
    val text = if (timing.lastMs.isNaN()) "–" else String.format(
        Locale.ROOT, "%.1f ms (median %s over %d runs)", timing.lastMs,
        if (timing.medianMs.isNaN()) "–" else String.format(Locale.ROOT, "%.1f ms", timing.medianMs), timing.runs,
    )
    Text("$name: $text", style = MaterialTheme.typography.bodySmall)
}

@Composable
private fun SettingsPanel(settings: RuntimeSettings, onChange: (RuntimeSettings) -> Unit) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(12.dp)) {
            Text("CPU threads: ${settings.threads}")
            Slider(
                value = settings.threads.toFloat(),
                onValueChange = { value -> if (value.toInt() != settings.threads) onChange(settings.copy(threads = value.toInt())) },
                valueRange = 1f..8f,
                steps = 6,
            )
            SwitchRow("XNNPACK (CPU)", settings.xnnpack) { onChange(settings.copy(xnnpack = it)) }
            SwitchRow("GPU delegate", settings.gpu) { onChange(settings.copy(gpu = it)) }
        }
    }
}

@Composable
private fun SwitchRow(label: String, checked: Boolean, onChange: (Boolean) -> Unit) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        Text(label, modifier = Modifier.weight(1f))
        Switch(checked = checked, onCheckedChange = onChange)
    }
}

@Composable
private fun Message(text: String, isError: Boolean) {
    val colors = if (isError) {
        CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.errorContainer)
    } else {
        CardDefaults.cardColors()
    }
    Card(colors = colors, modifier = Modifier.fillMaxWidth()) {
        Text(text, modifier = Modifier.padding(12.dp),
            color = if (isError) MaterialTheme.colorScheme.onErrorContainer else MaterialTheme.colorScheme.onSurface)
    }
}
