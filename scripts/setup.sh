#!/usr/bin/env bash
# Installs what luahook needs to build and test, from Debian's packages.
# Idempotent and quiet when everything is there.
set -euo pipefail

PKGS=(build-essential cmake pkg-config libuv1-dev liblua5.4-dev libcjson-dev node-llhttp
      libcurl4-openssl-dev libssl-dev nodejs npm curl openssl)
if [[ "${LUAHOOK_SETUP_EXTRA:-}" != "" ]]; then
  read -r -a extra <<< "$LUAHOOK_SETUP_EXTRA"
  PKGS+=("${extra[@]}")
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere; a working node and npm are what count
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]}"
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
