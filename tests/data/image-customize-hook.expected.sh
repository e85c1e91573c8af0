set -eu
root="$1"
staging="$2"
bundle="${3:-}"
cp -a "$staging"/. "$root"/
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service ssh.service
# Role services (Docker, containerd, nginx, keepalived) start only on the nodes whose bootstrap enables them.
chroot "$root" systemctl disable apt-daily-upgrade.timer apt-daily.timer containerd.service docker.service docker.socket e2scrub_all.timer e2scrub_reap.service keepalived.service nginx.service
# Rebuild the initramfs with fsck for ext4 (the staged FSTYPE): mmdebstrap made it before /etc/fstab existed.
chroot "$root" update-initramfs -u -k all
# Persistent journal: node preparation sizes it with a journald drop-in.
mkdir -p "$root"/var/log/journal
rm -f "$root"/etc/nginx/sites-enabled/default
if [ -n "$bundle" ]; then
  mkdir -p "$root"/opt/imagegen/bundle
  cp -a "$bundle"/. "$root"/opt/imagegen/bundle/
fi
# Template hygiene: every clone gets its own identity on first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root"/etc/machine-id
if [ -e "$root"/var/lib/dbus/machine-id ] && [ ! -L "$root"/var/lib/dbus/machine-id ]; then
  rm -f "$root"/var/lib/dbus/machine-id
fi
chroot "$root" cloud-init clean --logs
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
find "$root"/var/log -type f -exec truncate -s 0 {} +
rm -f "$root"/root/.bash_history
