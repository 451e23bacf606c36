#!/usr/bin/env bash
# Install the optional benchmark peers that `quill bench --peer ...` compares Quill against:
#   tesseract  Debian tesseract-ocr + tesseract-ocr-eng (Tesseract 5, English LSTM model)
#   rapidocr   PyPI rapidocr into the project venv (its wheel ships the PP-OCR ONNX models)
# Idempotent: when both are present it changes nothing and needs no network.
# Usage: scripts/install_peers.sh [tesseract] [rapidocr]   (no argument: both)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_PIP="${VENV:-.venv}/bin/pip"
VENV_PYTHON="${VENV:-.venv}/bin/python"
APT_PACKAGES=(tesseract-ocr tesseract-ocr-eng)
RAPIDOCR_REQUIREMENT="rapidocr>=3.10"

install_tesseract() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "tesseract: already installed ($(tesseract --version 2>&1 | head -n 1))"
    return
  fi
  echo "tesseract: installing Debian packages ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

install_rapidocr() {
  if [ ! -x "$VENV_PYTHON" ]; then
    echo "rapidocr: no virtualenv at ${VENV:-.venv}; run 'make setup' first" >&2
    exit 1
  fi
  if "$VENV_PYTHON" -c "import rapidocr" 2>/dev/null; then
    echo "rapidocr: already installed ($("$VENV_PIP" show rapidocr | grep '^Version'))"
    return
  fi
  echo "rapidocr: installing $RAPIDOCR_REQUIREMENT into ${VENV:-.venv}"
  "$VENV_PIP" install -q "$RAPIDOCR_REQUIREMENT"
}

peers=("$@")
if [ "${#peers[@]}" -eq 0 ]; then peers=(tesseract rapidocr); fi
for peer in "${peers[@]}"; do
  case "$peer" in
    tesseract) install_tesseract ;;
    rapidocr) install_rapidocr ;;
    *) echo "unknown peer '$peer' (known: tesseract rapidocr)" >&2; exit 2 ;;
  esac
done
