#!/usr/bin/env bash
# Install the headless browser the web page's end-to-end test drives (tests/test_serve.py):
# Debian's Chromium and its WebDriver, /usr/bin/chromium and /usr/bin/chromedriver.
#
# Idempotent: does nothing when both exist. As root it installs them with apt-get; otherwise
# it prints the command to run and fails, so that the test is never skipped silently.
set -euo pipefail

PACKAGES=(chromium chromium-driver)
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    echo "install_browser: chromium and chromedriver are installed"
    exit 0
fi
command="apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "install_browser: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver;" >&2
    echo "install them as root: sudo sh -c '$command'" >&2
    exit 1
fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "install_browser: ${PACKAGES[*]} installed in $(( $(date +%s) - start )) s"
