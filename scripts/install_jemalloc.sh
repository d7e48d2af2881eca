#!/usr/bin/env bash
# Put jemalloc in the venv for mixprep's local Beam workers (pipeline/cli.py, docs/PERFORMANCE.md):
# `tokenizers` runs ~13% faster on it there. Optional: without it the workers use glibc's malloc.
# Debian/Ubuntu: the distribution's own package, unpacked into VENV/lib (no root, nothing system-wide).
set -u
dest="$1/lib"
lib=libjemalloc.so.2
[ -e "$dest/$lib" ] && exit 0
if ldconfig -p 2>/dev/null | grep -q "$lib"; then exit 0; fi  # the system's is found at run time
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "note: jemalloc not installed (no apt-get); local workers use glibc malloc. Install libjemalloc2 to speed up the tokenizers backend." >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if (cd "$tmp" && apt-get download libjemalloc2 >/dev/null 2>&1) && dpkg-deb -x "$tmp"/libjemalloc2_*.deb "$tmp/x" \
   && found=$(find "$tmp/x" -name "$lib" | head -1) && [ -n "$found" ]; then
  mkdir -p "$dest" && cp "$found" "$dest/$lib" && echo "jemalloc: $dest/$lib"
else
  echo "note: could not fetch libjemalloc2 with apt-get download; local workers use glibc malloc." >&2
fi
exit 0
