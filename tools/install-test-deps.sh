#!/bin/bash
# Installs what `make test` needs and is not on a fresh machine: Debian tools the tests run for real
# (shellcheck, ISO readers, nginx, keepalived, cloud-localds, systemd-analyze, skopeo, e2fsprogs) and the real
# cloud-init schema validators of Debian bookworm (22.4) and trixie (25.1) and containerd 1.6/1.7/2.x (bookworm,
# trixie, sid) for its config parser, all unpacked without installing them.
# Idempotent: does nothing when everything is present.
set -euo pipefail
cache=${IMAGEGEN_CACHE:-$HOME/.cache/imagegen}
need=()
for tool in shellcheck:shellcheck isoinfo:genisoimage xorriso:xorriso nginx:nginx keepalived:keepalived \
            cloud-localds:cloud-image-utils systemd-analyze:systemd skopeo:skopeo mke2fs:e2fsprogs \
            debugfs:e2fsprogs openssl:openssl dnsmasq:dnsmasq-base; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "${tool%%:*}" >/dev/null 2>&1 \
    || need+=("${tool#*:}")
done
# nginx -t on a stream config needs the stream module, which is its own package.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "need root for apt-get install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  # The nginx package starts a server; the tests only need `nginx -t`.
  (command -v systemctl >/dev/null && systemctl stop nginx 2>/dev/null) || nginx -s stop 2>/dev/null || true
fi

# A Debian package's files, unpacked (never installed) with a private apt configuration: the host's sources and
# package state stay untouched. fetch_unpacked PACKAGE SUITE DEST FILE-THAT-PROVES-IT-IS-THERE
fetch_unpacked() {
  local package=$1 suite=$2 dest=$3 probe=$4
  [ -e "$dest/root/$probe" ] && return 0
  local work
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  cat >"$work/sources.list" <<LIST
deb http://deb.debian.org/debian $suite main
LIST
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
              -o "Dir::Cache=$work" -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download "$package" >/dev/null)
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  dpkg-deb -x "$work/${package}"_*.deb "$dest.tmp/root"
  dpkg-deb -f "$work/${package}"_*.deb Version >"$dest.tmp/version"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$work"
  echo "$package $(cat "$dest/version") ($suite) unpacked to $dest"
}

# cloud-init schema validators: bookworm 22.4 and trixie 25.1.
fetch_unpacked cloud-init bookworm "$cache/cloud-init/bookworm" usr/lib/python3/dist-packages/cloudinit
fetch_unpacked cloud-init trixie "$cache/cloud-init/trixie" usr/lib/python3/dist-packages/cloudinit
# containerd's own config parser for every rendered config.toml: bookworm 1.6, trixie 1.7, sid 2.x
# (`containerd --config FILE config dump` parses and prints the effective config without starting a daemon).
for suite in bookworm trixie sid; do
  fetch_unpacked containerd "$suite" "$cache/containerd/$suite" usr/bin/containerd
done
