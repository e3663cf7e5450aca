#!/usr/bin/env bash
# Everything the web demo and its browser test need, from the repository's own files: Debian's chromium
# (as root, when it is missing), the npm packages pinned by package-lock.json, and the built page in
# dynzoo/web_demo_site/ (which `pip install .` then ships inside the package).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
  else
    echo "web_demo/install.sh: no chromium, and no root to install it (apt-get install chromium)." >&2
  fi
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
