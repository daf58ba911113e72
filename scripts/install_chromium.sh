#!/usr/bin/env bash
# Debian's Chromium for the browser test (Playwright drives /usr/bin/chromium; it never downloads
# a browser of its own). Installs only when missing; needs root and apt-get.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
fail() { echo "install_chromium: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "/usr/bin/chromium is missing; as root: apt-get install chromium"
command -v apt-get >/dev/null 2>&1 || fail "/usr/bin/chromium is missing and there is no apt-get to install it"
# Fresh containers ship with empty package lists: refresh only when apt does not know the package.
apt-cache show chromium >/dev/null 2>&1 || apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2 || { apt-get update -qq >&2; apt-get install -y -qq --no-install-recommends chromium >&2; }
[ -x /usr/bin/chromium ] || fail "apt-get installed chromium but /usr/bin/chromium is missing"
