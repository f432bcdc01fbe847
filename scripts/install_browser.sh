#!/usr/bin/env bash
# Debian's Chromium for the browser test (etl_assets_tests/test_ui.py). Idempotent: installs only
# when /usr/bin/chromium is missing. Playwright drives this binary (executable_path); it never
# downloads a browser of its own (`playwright install` is not used and would fail offline).
# The Python `playwright` package comes from pyproject's dev extra.
set -euo pipefail

CHROMIUM="${ETL_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1; then
  echo "install_browser: $("$CHROMIUM" --version) already at $CHROMIUM"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-liberation: readable text in screenshots (Chromium falls back to it for sans-serif).
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
"$CHROMIUM" --version
