#!/usr/bin/env bash
# Install what `quill data synth` draws with: the handwriting and printed fonts and the
# English text corpus.
#
# Usage: scripts/install_fonts.sh [FONT_DIR]
#   FONT_DIR  where the npm fonts go (default: $QUILL_FONT_DIR, else .cache/fonts, which is
#             where quill looks when QUILL_FONT_DIR is unset)
#
# 1. Debian packages (fonts-* and r-cran-janeaustenr, the corpus) through
#    scripts/install_system_deps.sh, which installs whatever in requirements/apt.txt is missing.
# 2. The @fontsource npm packages pinned in assets/fonts/package-lock.json, with `npm ci`.
# Idempotent: when everything is already installed it changes nothing and needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install_system_deps.sh

dest="${1:-${QUILL_FONT_DIR:-.cache/fonts}}"
lock="assets/fonts/package-lock.json"
stamp="$dest/.installed-package-lock.json"
if [ -f "$stamp" ] && cmp -s "$lock" "$stamp" && [ -d "$dest/node_modules/@fontsource" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install_fonts.sh: npm is needed to install the handwriting fonts (Debian: nodejs)" >&2
  exit 1
fi
echo "Installing npm fonts into $dest"
mkdir -p "$dest"
cp assets/fonts/package.json "$lock" "$dest/"
npm ci --prefix "$dest" --no-audit --no-fund --ignore-scripts --loglevel=error
cp "$lock" "$stamp"
