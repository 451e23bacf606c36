#!/usr/bin/env bash
# Install the Debian packages listed in requirements/apt.txt that are missing.
# Idempotent: when everything is present it changes nothing and needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r package; do
  package="${package%%#*}"
  package="${package//[[:space:]]/}"
  [ -z "$package" ] && continue
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done < requirements/apt.txt

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
