#!/bin/sh
# A system program the tests need: found, or installed from Debian's packages where
# that is possible (root with apt-get), or else one line that says what to do.
#   tools/require.sh <program> <Debian package>
set -eu
program=$1
package=$2
PATH="$PATH:/usr/sbin:/usr/local/sbin"
command -v "$program" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $package (apt-get), which the tests need"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1 || true
    command -v "$program" >/dev/null 2>&1 && exit 0
fi
echo "make test needs $program: install the $package package (apt-get install $package, brew install $package) and run it again" >&2
exit 1
