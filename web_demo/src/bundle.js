// The bundle contract (docs/bundle_format.md) in the browser: reading and checking a bundle's files, turning
// an image into the model's input tensor, and the model's output into scores. Pure functions, no DOM and no
// LiteRT, so that Node's test runner checks them too. The arithmetic follows the Python reference
// (export/bundle.py) and the JVM core (android_demo/core, Preprocessor.java) operation by operation, in
// float32 where they use float32 (Math.fround after every step), so the same pixels give the same tensor.

export const FORMAT_VERSION = 1;
export const TOP_K = 5;

/** A problem with a bundle, naming its file and field: shown on the page as it is. */
export class BundleError extends Error {
  constructor(bundle, file, problem) {
    super(`bundle ${bundle}: ${file}: ${problem}`);
    this.name = 'BundleError';
  }
}

const isInt = (v) => Number.isInteger(v);
const numbers = (v, n) => Array.isArray(v) && v.length === n && v.every((x) => typeof x === 'number');

// (field, test, what is allowed): the fields that readers rely on, as export/bundle.py checks them.
const INFO_FIELDS = [
  ['format_version', (v) => v === FORMAT_VERSION, `${FORMAT_VERSION}`],
  ['tflite_sha256', (v) => typeof v === 'string' && /^[0-9a-fA-F]{64}$/.test(v), '64 hexadecimal digits'],
  ['input.height', (v) => isInt(v) && v > 0, 'a positive integer'],
  ['input.width', (v) => isInt(v) && v > 0, 'a positive integer'],
  ['input.channels', (v) => v === 3, '3'],
  ['input.dtype', (v) => ['float32', 'int8', 'uint8'].includes(v), 'float32, int8 or uint8'],
  ['input.preprocessing_in_model', (v) => typeof v === 'boolean', 'true or false'],
  ['input.mean', (v) => numbers(v, 3), 'three numbers'],
  ['input.std', (v) => numbers(v, 3) && v.every((x) => x > 0), 'three numbers > 0'],
  ['input.resize.method', (v) => v === 'bilinear', '"bilinear"'],
  ['input.resize.crop', (v) => v === 'center', '"center"'],
  ['input.resize.resize_shorter', (v) => isInt(v) && v > 0, 'a positive integer'],
  ['output.num_classes', (v) => isInt(v) && v > 0, 'a positive integer'],
  ['output.dtype', (v) => ['float32', 'int8', 'uint8'].includes(v), 'float32, int8 or uint8'],
  ['output.activation', (v) => v === 'softmax' || v === 'none', 'softmax or none'],
];

function field(object, path) {
  let value = object;
  for (const key of path.split('.')) {
    value = value !== null && typeof value === 'object' && !Array.isArray(value) ? value[key] : undefined;
  }
  return value;
}

function quantizationOk(q) {
  return q !== null && typeof q === 'object' && typeof q.scale === 'number' && q.scale > 0 && isInt(q.zero_point);
}

/** The parsed, checked model_info.json of bundle `name` (its text in `text`). */
export function parseModelInfo(name, text) {
  let info;
  try {
    info = JSON.parse(text);
  } catch (e) {
    throw new BundleError(name, 'model_info.json', `invalid JSON (${e.message})`);
  }
  if (info === null || typeof info !== 'object' || Array.isArray(info)) {
    throw new BundleError(name, 'model_info.json', 'must hold a JSON object');
  }
  for (const [path, test, allowed] of INFO_FIELDS) {
    const value = field(info, path);
    if (!test(value)) {
      throw new BundleError(name, 'model_info.json', `\`${path}\` must be ${allowed}, got ${JSON.stringify(value)}`);
    }
  }
  for (const side of ['input', 'output']) {
    const spec = info[side];
    if (spec.dtype !== 'float32' && !quantizationOk(spec.quantization)) {
      throw new BundleError(name, 'model_info.json', `\`${side}.quantization\` must be {"scale" > 0, "zero_point"} `
        + `for a ${spec.dtype} ${side}, got ${JSON.stringify(spec.quantization)}`);
    }
  }
  const { height, width } = info.input;
  if (info.input.resize.resize_shorter < Math.max(height, width)) {
    throw new BundleError(name, 'model_info.json', `\`input.resize.resize_shorter\` = `
      + `${info.input.resize.resize_shorter} is smaller than the ${height}×${width} crop`);
  }
  return info;
}

/** The labels of labels.txt (one a line), checked against the model's class count. */
export function parseLabels(name, text, info) {
  const labels = text.split('\n');
  if (labels.length > 0 && labels[labels.length - 1] === '') labels.pop();
  const count = info.output.num_classes;
  if (labels.length !== count) {
    throw new BundleError(name, 'labels.txt', `has ${labels.length} labels but model_info.json says `
      + `output.num_classes = ${count}`);
  }
  return labels.map((l) => l.replace(/\r$/, ''));
}

/** Hex SHA-256 of `bytes` (Web Crypto: a secure context, which 127.0.0.1 is). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Throws unless the model file is the one model_info.json describes. */
export async function checkModelBytes(name, bytes, info) {
  const actual = await sha256Hex(bytes);
  if (actual !== info.tflite_sha256.toLowerCase()) {
    throw new BundleError(name, 'model.tflite', `sha256 is ${actual} but model_info.json expects `
      + `${info.tflite_sha256} (the files come from different exports)`);
  }
}

/** Throws unless the compiled model's first input and output are what model_info.json says. */
export function checkModelSignature(name, info, input, output) {
  const want = [1, info.input.height, info.input.width, info.input.channels];
  const got = Array.from(input.shape);
  if (got.join(',') !== want.join(',') || input.dtype !== info.input.dtype) {
    throw new BundleError(name, 'model.tflite', `its input is ${input.dtype} [${got}] but model_info.json `
      + `describes ${info.input.dtype} [${want}]`);
  }
  const outShape = Array.from(output.shape);
  if (outShape[outShape.length - 1] !== info.output.num_classes || output.dtype !== info.output.dtype) {
    throw new BundleError(name, 'model.tflite', `its output is ${output.dtype} [${outShape}] but model_info.json `
      + `describes ${info.output.dtype} with ${info.output.num_classes} classes`);
  }
}

const f = Math.fround;

/** [width, height] after scaling so that the shorter side is `shorter`, the longer rounded half up. */
export function resizedSize(width, height, shorter) {
  if (width <= height) return [shorter, Math.floor((height * shorter) / width + 0.5)];
  return [Math.floor((width * shorter) / height + 0.5), shorter];
}

// Source indices and weights along one axis for output positions offset … offset + count - 1 (half-pixel
// centres: output i samples input (i + 0.5) · in/out − 0.5), in float32 as TensorFlow's kernel.
function axis(inSize, outSize, offset, count) {
  const lower = new Int32Array(count);
  const upper = new Int32Array(count);
  const lerp = new Float32Array(count);
  const scale = f(inSize / outSize);
  for (let i = 0; i < count; i++) {
    const at = f(f(f(i + offset + 0.5) * scale) - 0.5);
    const floor = Math.floor(at);
    lower[i] = Math.max(floor, 0);
    upper[i] = Math.min(Math.ceil(at), inSize - 1);
    lerp[i] = f(at - floor);
  }
  return { lower, upper, lerp };
}

/**
 * Rule 1: the centre height × width window of the RGBA `pixels` (width × height, as ImageData holds them)
 * resized to a shorter side of `shorter`, bilinear without antialiasing: HWC RGB floats in [0, 255].
 */
export function resizeAndCrop(pixels, imageWidth, imageHeight, shorter, cropHeight, cropWidth) {
  const [newWidth, newHeight] = resizedSize(imageWidth, imageHeight, shorter);
  if (cropWidth > newWidth || cropHeight > newHeight) {
    throw new Error(`crop ${cropHeight}×${cropWidth} does not fit the resized ${newHeight}×${newWidth} image`);
  }
  const xs = axis(imageWidth, newWidth, Math.floor((newWidth - cropWidth) / 2), cropWidth);
  const ys = axis(imageHeight, newHeight, Math.floor((newHeight - cropHeight) / 2), cropHeight);
  const out = new Float32Array(cropHeight * cropWidth * 3);
  let o = 0;
  for (let y = 0; y < cropHeight; y++) {
    const top = ys.lower[y] * imageWidth;
    const bottom = ys.upper[y] * imageWidth;
    const yLerp = ys.lerp[y];
    for (let x = 0; x < cropWidth; x++) {
      const left = xs.lower[x];
      const right = xs.upper[x];
      const xLerp = xs.lerp[x];
      for (let c = 0; c < 3; c++) {
        const topLeft = pixels[(top + left) * 4 + c];
        const topRight = pixels[(top + right) * 4 + c];
        const bottomLeft = pixels[(bottom + left) * 4 + c];
        const bottomRight = pixels[(bottom + right) * 4 + c];
        const upperRow = f(topLeft + f(f(topRight - topLeft) * xLerp));
        const lowerRow = f(bottomLeft + f(f(bottomRight - bottomLeft) * xLerp));
        out[o++] = f(upperRow + f(f(lowerRow - upperRow) * yLerp));
      }
    }
  }
  return out;
}

/** Rule 3: clamp(round_half_away_from_zero(v / scale) + zero_point) in the dtype's range. */
export function quantize(value, quantization, dtype) {
  const scaled = value / quantization.scale;
  const rounded = Math.sign(scaled) * Math.floor(Math.abs(scaled) + 0.5);
  const [min, max] = dtype === 'int8' ? [-128, 127] : [0, 255];
  return Math.max(min, Math.min(max, rounded + quantization.zero_point));
}

const TYPED_ARRAYS = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array };

/**
 * The model's input (a Float32Array, Int8Array or Uint8Array of 1 × H × W × 3) for an RGBA image, by the
 * bundle format's rules: resize and centre crop, normalise (unless the model does it), quantize.
 */
export function preprocess(pixels, imageWidth, imageHeight, info) {
  const spec = info.input;
  const values = resizeAndCrop(pixels, imageWidth, imageHeight, spec.resize.resize_shorter, spec.height, spec.width);
  if (!spec.preprocessing_in_model) {
    const mean = spec.mean.map(f);
    const std = spec.std.map(f);
    for (let i = 0; i < values.length; i++) {
      const c = i % 3;
      values[i] = f(f(f(values[i] / 255) - mean[c]) / std[c]);
    }
  }
  if (spec.dtype === 'float32') return values;
  const out = new TYPED_ARRAYS[spec.dtype](values.length);
  for (let i = 0; i < values.length; i++) out[i] = quantize(values[i], spec.quantization, spec.dtype);
  return out;
}

/** A typed array of `dtype` over the little-endian bytes of a .bin file. */
export function typedArrayFromBytes(bytes, dtype) {
  const Type = TYPED_ARRAYS[dtype];
  const copy = new Uint8Array(bytes).slice();
  return new Type(copy.buffer, 0, copy.byteLength / Type.BYTES_PER_ELEMENT);
}

/** Rule 4: class probabilities (float64) from the raw output, dequantized and softmaxed when they are logits. */
export function scores(raw, info) {
  const out = info.output;
  let values = Float64Array.from(raw, Number);
  if (out.quantization) {
    values = values.map((v) => (v - out.quantization.zero_point) * out.quantization.scale);
  }
  if (out.activation === 'none') {
    const max = Math.max(...values);
    values = values.map((v) => Math.exp(v - max));
    const sum = values.reduce((a, b) => a + b, 0);
    values = values.map((v) => v / sum);
  }
  return values;
}

/** The k best [class, probability] pairs; ties keep the lower class first (a stable sort). */
export function topK(probabilities, k = TOP_K) {
  return Array.from(probabilities, (p, c) => [c, p])
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, k);
}

/** The median of a list of numbers (the mean of the two middle ones for an even count). */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
