#!/usr/bin/env bash
# Builds the plain-JVM core of the Android demo with javac and runs its JUnit 4 tests (no Gradle needed).
#
#   android_demo/core/run_tests.sh [BUNDLE_DIR...]
#
# With bundle folders that hold golden/ files (dynzoo export ... --bundle --golden), the golden
# cross-language test runs on them too. Installs Debian's JDK and JUnit 4 when missing (apt-get update
# once). Exits non-zero when the build or any test fails.
set -euo pipefail

CORE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JUNIT_JAR=/usr/share/java/junit4.jar
HAMCREST_JAR=/usr/share/java/hamcrest-core.jar

install_missing() {
  local packages=()
  command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
  [[ -f "$JUNIT_JAR" && -f "$HAMCREST_JAR" ]] || packages+=(junit4)
  ((${#packages[@]})) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "run_tests.sh: need root (or sudo) to install ${packages[*]}" >&2; exit 2; }
    sudo=(sudo)
  fi
  echo "run_tests.sh: installing ${packages[*]} from Debian packages" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

install_missing

BUNDLES=""
for dir in "$@"; do
  [[ -d "$dir/golden" ]] || { echo "run_tests.sh: $dir has no golden/ folder" >&2; exit 2; }
  BUNDLES="${BUNDLES:+$BUNDLES:}$(cd "$dir" && pwd)"
done

BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
mkdir -p "$BUILD/main" "$BUILD/test"

# --release 8 keeps the core within the Java APIs that Android (minSdk 24) offers.
find "$CORE/src/main/java" -name '*.java' > "$BUILD/main-sources"
javac --release 8 -Xlint:all -Xlint:-options -Werror -encoding UTF-8 -d "$BUILD/main" @"$BUILD/main-sources"

find "$CORE/src/test/java" -name '*.java' > "$BUILD/test-sources"
javac -Xlint:all -Werror -encoding UTF-8 -cp "$BUILD/main:$JUNIT_JAR:$HAMCREST_JAR" -d "$BUILD/test" @"$BUILD/test-sources"

TEST_CLASSES=$(cd "$CORE/src/test/java" && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)

# Headless: the golden test decodes a PNG with ImageIO, which needs no display.
java -Djava.awt.headless=true -Ddynzoo.goldenBundles="$BUNDLES" \
  -cp "$BUILD/main:$BUILD/test:$JUNIT_JAR:$HAMCREST_JAR" org.junit.runner.JUnitCore $TEST_CLASSES
