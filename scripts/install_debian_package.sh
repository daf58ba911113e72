#!/usr/bin/env bash
# Installs a Debian package when the file it provides is missing, for the tests that drive real
# programs (`make test`: Chromium for the browser test, Prometheus for the metrics test).
#   scripts/install_debian_package.sh PACKAGE FILE     e.g. chromium /usr/bin/chromium
# Needs root and apt-get when it has something to install.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 PACKAGE FILE" >&2; exit 2; }
package="$1"
file="$2"
[ -x "$file" ] && exit 0
fail() { echo "install_debian_package: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "$file is missing; as root: apt-get install $package"
command -v apt-get >/dev/null 2>&1 || fail "$file is missing and there is no apt-get to install $package"
# Fresh containers ship with empty package lists: refresh only when apt does not know the package.
apt-cache show "$package" >/dev/null 2>&1 || apt-get update -qq >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >&2; }
install || { apt-get update -qq >&2; install; }
[ -x "$file" ] || fail "apt-get installed $package but $file is missing"
