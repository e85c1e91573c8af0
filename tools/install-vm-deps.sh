#!/bin/bash
# Installs what `make image`, `make bundle`, `make vm-smoke` and `make cluster-test` need from Debian: QEMU,
# libvirt (daemon, client headers for libvirt-python), OVMF, mmdebstrap and the disk tools used to build images
# without mounts. Host-side kubectl comes from the bundle (bin/kubectl). Idempotent: apt is called only for what is missing.
set -euo pipefail
packages=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-dev pkg-config python3-dev gcc ovmf
          dnsmasq-base mmdebstrap fdisk dosfstools e2fsprogs xorriso genisoimage iptables openssh-client
          dpkg-dev skopeo)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "need root for apt-get install ${missing[*]}" >&2; exit 1; }
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
