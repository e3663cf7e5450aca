// Builds the page into ../dynzoo/web_demo_site, where `pip install .` picks it up as package data and
// `dynzoo serve-demo` serves it, with LiteRT.js's WebAssembly runtime copied beside it (wasm/): nothing is
// fetched from a CDN.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { defineConfig } from 'vite';

const require = createRequire(import.meta.url);
const liteRtDist = dirname(require.resolve('@litertjs/core'));
const WASM_DIR = join(liteRtDist, '..', 'wasm');
// The builds the page may load: SIMD (relaxed or not) single-threaded, and threaded under isolation.
const WASM_FILES = ['litert_wasm_internal', 'litert_wasm_compat_internal', 'litert_wasm_threaded_internal']
  .flatMap((name) => [`${name}.js`, `${name}.wasm`]);

function copyLiteRtWasm() {
  return {
    name: 'dynzoo-copy-litert-wasm',
    generateBundle() {
      for (const file of WASM_FILES) {
        this.emitFile({ type: 'asset', fileName: `wasm/${file}`, source: readFileSync(join(WASM_DIR, file)) });
      }
    },
  };
}

// LiteRT.js 2.5 maps only float32, int32 and uint8 tensors to typed arrays, although its runtime runs int8
// models: a full-integer bundle (int8 input and output) fails with "Element type INT8 is not supported".
// Add the int8 ↔ Int8Array row to that table. The build fails if the table is not found, so an upgrade of
// the package cannot drop this silently.
const UINT8_ROW = /(\{\s*dtype: "uint8",\s*typedArrayConstructor: Uint8Array,\s*elementType: ElementType\.UINT8\s*\})/;

function liteRtInt8Tensors() {
  return {
    name: 'dynzoo-litert-int8-tensors',
    transform(code, id) {
      if (!id.includes('@litertjs/core') || !code.includes('var DATATYPES')) return null;
      if (!UINT8_ROW.test(code)) {
        throw new Error('@litertjs/core: the DATATYPES table has changed; review the int8 patch in vite.config.js');
      }
      return code.replace(UINT8_ROW,
        '$1,\n  { dtype: "int8", typedArrayConstructor: Int8Array, elementType: ElementType.INT8 }');
    },
  };
}

export default defineConfig({
  base: './',
  plugins: [liteRtInt8Tensors(), copyLiteRtWasm()],
  build: {
    outDir: '../dynzoo/web_demo_site',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 1000,
  },
});
