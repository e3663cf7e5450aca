// The plain-JVM core: bundle parsing, preprocessing, top-k. No Android dependency, so it is unit-tested
// on any JVM (here: android_demo/core/run_tests.sh with javac + JUnit, no Gradle needed).
plugins {
    `java-library`
}

java {
    // Java 8 APIs only: everything Android minSdk 24 offers.
    sourceCompatibility = JavaVersion.VERSION_1_8
    targetCompatibility = JavaVersion.VERSION_1_8
}

dependencies {
    testImplementation(libs.junit)
}

tasks.test {
    // ./gradlew :core:test -PgoldenBundles=/path/a:/path/b runs the golden cross-language test too.
    systemProperty("dynzoo.goldenBundles", providers.gradleProperty("goldenBundles").getOrElse(""))
    systemProperty("java.awt.headless", "true")
    testLogging { showStandardStreams = true }
}
