// The page: pick or drop a bundle, give it an image (file, camera or URL), show the top-5 and the timings.
// The bundle rules live in bundle.js; this file is the DOM and LiteRT.js. `window.dynzooDemo` lets the
// browser test (web_demo/test/browser_check.mjs), which drives the page as a user would, read the tensors
// back exactly and run the golden input.

import { loadAndCompile, loadLiteRt, Tensor } from '@litertjs/core';
import {
  BundleError, checkModelBytes, checkModelSignature, median, parseLabels, parseModelInfo, preprocess, scores,
  topK, typedArrayFromBytes,
} from './bundle.js';

const $ = (id) => document.getElementById(id);
const BUNDLE_FILES = ['model.tflite', 'labels.txt', 'model_info.json'];
const threads = Math.max(1, Number(new URLSearchParams(location.search).get('threads')) || 1);

let bundle = null; // {name, info, labels, model}
let image = null; // {pixels (RGBA), width, height, source}
let lastResult = null;

const liteRtReady = (async () => {
  // The wasm files are served beside the page (wasm/); the threaded build needs cross-origin isolation,
  // which `dynzoo serve-demo` provides.
  const useThreads = threads > 1 && self.crossOriginIsolated;
  await loadLiteRt(new URL('wasm/', location.href).href, useThreads ? { threads: true } : undefined);
  return useThreads ? threads : 1;
})();

function showError(error) {
  const box = $('error');
  box.textContent = error instanceof BundleError ? error.message : `${error.name || 'Error'}: ${error.message || error}`;
  box.hidden = false;
  $('status').textContent = 'Failed.';
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

async function guarded(work) {
  clearError();
  try {
    return await work();
  } catch (error) {
    showError(error);
    throw error;
  }
}

// A bundle's files from the server: bundles/NAME/FILE. A missing file is null.
function servedFiles(name) {
  return async (file) => {
    const response = await fetch(`bundles/${encodeURIComponent(name)}/${file}`);
    if (response.status === 404) return null;
    if (!response.ok) throw new BundleError(name, file, `HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  };
}

// A bundle's files from dropped or picked File objects, by base name.
function droppedFiles(files) {
  const byName = new Map(files.map((file) => [file.name, file]));
  return async (file) => (byName.has(file) ? new Uint8Array(await byName.get(file).arrayBuffer()) : null);
}

async function loadBundle(name, readFile) {
  const numThreads = await liteRtReady;
  $('status').textContent = `Loading bundle ${name}…`;
  const contents = await Promise.all(BUNDLE_FILES.map(readFile));
  BUNDLE_FILES.forEach((file, i) => {
    if (contents[i] === null) throw new BundleError(name, file, 'missing');
  });
  const [modelBytes, labelBytes, infoBytes] = contents;
  const text = (file, bytes) => {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new BundleError(name, file, 'is not UTF-8 text');
    }
  };
  const info = parseModelInfo(name, text('model_info.json', infoBytes));
  const labels = parseLabels(name, text('labels.txt', labelBytes), info);
  await checkModelBytes(name, modelBytes, info);
  let model;
  try {
    model = await loadAndCompile(modelBytes, { accelerator: 'wasm', cpuOptions: { numThreads } });
  } catch (error) {
    throw new BundleError(name, 'model.tflite', `LiteRT cannot load it (${error.message || error})`);
  }
  checkModelSignature(name, info, model.getInputDetails()[0], model.getOutputDetails()[0]);
  if (bundle) bundle.model.delete();
  bundle = { name, info, labels, model, threads: numThreads };
  showBundle();
  $('status').textContent = `Bundle ${name} ready.`;
  if (image) await classify();
  return info;
}

function showBundle() {
  const { info, name } = bundle;
  const rows = {
    bundle: name,
    model: `${info.source_model ?? '?'} (${info.mode ?? '?'})`,
    input: `${info.input.height}×${info.input.width}×3 ${info.input.dtype}`
      + (info.input.preprocessing_in_model ? ', raw RGB' : ', normalised'),
    output: `${info.output.num_classes} classes ${info.output.dtype} (${info.output.activation === 'none' ? 'logits' : 'softmax'})`,
    threads: String(bundle.threads),
  };
  $('bundle-info').replaceChildren(...Object.entries(rows).flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// Exact pixels: no colour-space conversion and no premultiplied alpha, so a PNG reads as its bytes.
async function decodeImage(blob, source) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  return pixelsOf(bitmap, bitmap.width, bitmap.height, source);
}

function pixelsOf(drawable, width, height, source) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(drawable, 0, 0);
  return { pixels: context.getImageData(0, 0, width, height).data, width, height, source };
}

async function setImage(newImage) {
  image = newImage;
  if (bundle) return classify();
  $('status').textContent = 'Image ready; pick a bundle.';
  return null;
}

async function classify() {
  const { info, labels, model } = bundle;
  const runs = Math.max(1, Math.min(1000, Number($('runs').value) || 20));
  $('status').textContent = `Running ${bundle.name} ${runs} times…`;
  await new Promise((resolve) => setTimeout(resolve)); // let the status paint

  const preprocessTimes = [];
  let input;
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    input = preprocess(image.pixels, image.width, image.height, info);
    preprocessTimes.push(performance.now() - started);
  }
  const output = await runModel(model, input, info, runs);
  const probabilities = scores(output.values, info);
  const top = topK(probabilities);
  lastResult = {
    bundle: bundle.name,
    source: image.source,
    top: top.map(([c, p]) => ({ class: c, label: labels[c], probability: p })),
    preprocessMs: median(preprocessTimes),
    inferenceMs: median(output.times),
    runs,
    threads: bundle.threads,
    input: bytesToBase64(input),
    output: bytesToBase64(output.values),
  };
  showResult(input, info);
  $('status').textContent = `${bundle.name}: done.`;
  return lastResult;
}

// One untimed warm-up run, then `runs` timed ones; the output of the last.
async function runModel(model, input, info, runs) {
  const shape = [1, info.input.height, info.input.width, 3];
  const times = [];
  let values;
  for (let i = 0; i <= runs; i++) {
    const started = performance.now();
    const tensor = new Tensor(input, shape);
    const outputs = await model.run(tensor);
    values = outputs[0].toTypedArray().slice();
    tensor.delete();
    outputs.forEach((t) => t.delete());
    if (i > 0) times.push(performance.now() - started);
  }
  return { values, times };
}

function bytesToBase64(typed) {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function showResult(input, info) {
  const rows = $('top-k').tBodies[0];
  rows.replaceChildren(...lastResult.top.map((entry, i) => {
    const row = el('tr');
    const bar = el('span', undefined, 'bar');
    bar.style.width = `${Math.round(entry.probability * 120)}px`;
    const p = el('td', undefined, 'p');
    p.append(bar, `${(entry.probability * 100).toFixed(2)} %`);
    row.append(el('td', String(i + 1)), el('td', entry.label), p);
    row.dataset.class = String(entry.class);
    return row;
  }));
  const timings = {
    image: `${lastResult.source} (${image.width}×${image.height})`,
    preprocessing: `${lastResult.preprocessMs.toFixed(3)} ms (median of ${lastResult.runs})`,
    inference: `${lastResult.inferenceMs.toFixed(3)} ms (median of ${lastResult.runs}, ${lastResult.threads} thread${lastResult.threads > 1 ? 's' : ''})`,
  };
  $('timings').replaceChildren(...Object.entries(timings).flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
  drawPreview(input, info);
  $('result').hidden = false;
}

// The model's input as the model sees it (normalisation and quantization undone for display).
function drawPreview(input, info) {
  const { height, width } = info.input;
  const canvas = $('preview');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  const picture = context.createImageData(width, height);
  const q = info.input.quantization;
  for (let i = 0; i < width * height * 3; i++) {
    let v = q ? (input[i] - q.zero_point) * q.scale : input[i];
    if (!info.input.preprocessing_in_model) v = (v * info.input.std[i % 3] + info.input.mean[i % 3]) * 255;
    picture.data[Math.floor(i / 3) * 4 + (i % 3)] = v;
  }
  for (let i = 3; i < picture.data.length; i += 4) picture.data[i] = 255;
  context.putImageData(picture, 0, 0);
}

async function listServedBundles() {
  const select = $('bundle-select');
  let names = [];
  try {
    const response = await fetch('bundles/index.json');
    if (response.ok) names = (await response.json()).bundles ?? [];
  } catch {
    // served without a bundle list (a plain static server): only dropping works
  }
  select.replaceChildren(el('option', names.length ? '(pick one)' : '(no served bundles: drop one)'),
    ...names.map((name) => Object.assign(el('option', name), { value: name })));
  select.firstChild.value = '';
  return names;
}

async function filesFromDrop(dataTransfer) {
  const entries = Array.from(dataTransfer.items ?? [], (item) => item.webkitGetAsEntry?.()).filter(Boolean);
  const files = [];
  const fileOf = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));
  for (const entry of entries) {
    if (entry.isDirectory) {
      const children = await new Promise((resolve, reject) => entry.createReader().readEntries(resolve, reject));
      for (const child of children) if (child.isFile) files.push(await fileOf(child));
    } else if (entry.isFile) {
      files.push(await fileOf(entry));
    }
  }
  const folder = entries.length === 1 && entries[0].isDirectory ? entries[0].name : 'dropped';
  return { files: files.length ? files : Array.from(dataTransfer.files), folder };
}

let cameraStream = null;

function wire() {
  $('bundle-select').addEventListener('change', (e) => {
    if (e.target.value) guarded(() => loadBundle(e.target.value, servedFiles(e.target.value))).catch(() => {});
  });
  $('bundle-files').addEventListener('change', (e) => {
    const files = Array.from(e.target.files);
    guarded(() => loadBundle('dropped', droppedFiles(files))).catch(() => {});
  });
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    guarded(async () => {
      const { files, folder } = await filesFromDrop(e.dataTransfer);
      return loadBundle(folder, droppedFiles(files));
    }).catch(() => {});
  });
  $('image-file').addEventListener('change', (e) => {
    const file = e.target.files[0];
    if (file) guarded(async () => setImage(await decodeImage(file, file.name))).catch(() => {});
  });
  $('url-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(() => loadImageUrl($('image-url').value.trim())).catch(() => {});
  });
  $('camera-start').addEventListener('click', () => guarded(startCamera).catch(() => {}));
  $('camera-capture').addEventListener('click', () => {
    const video = $('camera-video');
    guarded(() => setImage(pixelsOf(video, video.videoWidth, video.videoHeight, 'camera'))).catch(() => {});
  });
}

async function loadImageUrl(url) {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin) {
    throw new Error(`the image URL must be a file served by this server (${location.origin}), got ${target.origin}`);
  }
  const response = await fetch(target);
  if (!response.ok) throw new Error(`cannot load the image ${url}: HTTP ${response.status}`);
  return setImage(await decodeImage(await response.blob(), target.pathname));
}

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) throw new Error('this browser gives the page no camera');
  cameraStream ??= await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  const video = $('camera-video');
  video.srcObject = cameraStream;
  video.hidden = false;
  await video.play();
  $('camera-capture').disabled = false;
}

window.dynzooDemo = {
  ready: (async () => {
    wire();
    const threadCount = await liteRtReady.catch((error) => {
      showError(error);
      throw error;
    });
    const names = await listServedBundles();
    $('status').textContent = `LiteRT ready (${threadCount} thread${threadCount > 1 ? 's' : ''}). Pick a bundle.`;
    return names;
  })(),
  /** Runs the current bundle on a tensor given as little-endian bytes (base64); resolves to the output's. */
  runTensor: async (base64) => {
    const { info, model } = bundle;
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const output = await runModel(model, typedArrayFromBytes(bytes, info.input.dtype), info, 1);
    return bytesToBase64(output.values);
  },
  result: () => lastResult,
};
