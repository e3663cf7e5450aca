package org.dynzoo.demo

import android.content.res.AssetManager
import org.dynzoo.core.Bundle
import org.dynzoo.core.BundleException

/** The bundles shipped in the APK, one folder each under `assets/bundles/` (docs/bundle_format.md). */
object BundleAssets {
    const val ROOT = "bundles"

    /** Names of the bundle folders, sorted (files such as the README are skipped). */
    fun list(assets: AssetManager): List<String> =
        assets.list(ROOT).orEmpty()
            .filter { name -> assets.list("$ROOT/$name").orEmpty().isNotEmpty() }
            .sorted()

    /** Loads and validates one bundle; a [BundleException] says what is missing or malformed. */
    @Throws(BundleException::class)
    fun load(assets: AssetManager, name: String): Bundle =
        Bundle.load(name) { file -> assets.open("$ROOT/$name/$file").use(Bundle::readAll) }

    /** The bytes of `bundles/<name>/<path>` (golden files in the instrumented test). */
    fun read(assets: AssetManager, name: String, path: String): ByteArray =
        assets.open("$ROOT/$name/$path").use(Bundle::readAll)
}
