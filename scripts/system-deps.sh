#!/usr/bin/env bash
# Install the Debian packages Ferry needs (as root), or say exactly what is missing.
set -euo pipefail
PKGS=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev pkg-config
      mtools dosfstools iproute2 openssh-client openssh-server rsync netcat-openbsd time)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The guest image builder resolves and downloads Debian packages: it needs
# package lists even when every tool is already installed.
if [ "$(id -u)" -eq 0 ] && ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Ferry needs these Debian packages: ${missing[*]}" >&2
  echo "Install them as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
