#!/bin/sh
# Print the path of a promtool binary, fetching it first if needed.
#
# promtool is not packaged on its own: it comes inside Debian's `prometheus` package. We download that .deb
# with `apt-get download` (no installation, no root needed for the download itself, no service started) and
# unpack it with `dpkg-deb -x` into a cache directory that git ignores. Later calls reuse the cached binary.
#
#   scripts/get-promtool.sh            -> prints e.g. /work/main/build/promtool/usr/bin/promtool
#   PROMTOOL_CACHE=/tmp/x scripts/get-promtool.sh
#
# Order of preference: $PROMTOOL (an explicit binary), the cached binary, `promtool` on PATH, a fresh download.
# Exit status: 0 with the path on stdout; 1 with a reason on stderr when promtool cannot be obtained
# (no apt-get/dpkg-deb, no package index, no network). tests/test_deploy.py skips on that status.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${PROMTOOL_CACHE:-"$repo/build/promtool"}
cached="$cache/usr/bin/promtool"

if [ -n "${PROMTOOL:-}" ]; then
    if [ -x "$PROMTOOL" ]; then echo "$PROMTOOL"; exit 0; fi
    echo "get-promtool: \$PROMTOOL=$PROMTOOL is not an executable file" >&2; exit 1
fi
if [ -x "$cached" ]; then echo "$cached"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "get-promtool: $tool not found (a Debian/Ubuntu host is needed to fetch the prometheus package)" >&2
        exit 1
    fi
done

mkdir -p "$cache/deb"
# apt-get download writes into the current directory; as root it warns that the download is unsandboxed
download() { (cd "$cache/deb" && apt-get download -q prometheus >"$cache/deb/apt.log" 2>&1); }
# a fresh machine may have no package index yet: refresh it once (as root) and try again
if ! download && { [ "$(id -u)" != 0 ] || ! apt-get update -q >"$cache/deb/update.log" 2>&1 || ! download; }; then
    echo "get-promtool: 'apt-get download prometheus' failed (no package index or no network?):" >&2
    tail -n 5 "$cache/deb/apt.log" >&2
    exit 1
fi
deb=$(ls "$cache"/deb/prometheus_*.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
    echo "get-promtool: apt-get download reported success but left no prometheus_*.deb in $cache/deb" >&2
    exit 1
fi
# keep only promtool (the package also holds the ~100 MB prometheus server)
rm -rf "$cache/extract"
dpkg-deb -x "$deb" "$cache/extract"
if [ ! -x "$cache/extract/usr/bin/promtool" ]; then
    echo "get-promtool: $deb has no usr/bin/promtool" >&2
    exit 1
fi
mkdir -p "$cache/usr/bin"
mv "$cache/extract/usr/bin/promtool" "$cached"
rm -rf "$cache/extract" "$cache/deb"
echo "$cached"
