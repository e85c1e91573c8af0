"""What the builder writes into the root filesystem and the scripts it runs: pure text from spec + layout.

The rendered texts are part of the cache key, so any change here is a new image.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from imagegen.image.layout import DiskLayout
from imagegen.image.spec import ImageSpec

# The last console= wins /dev/console: the serial port, where cloud-init's final_message and imagegen's markers
# must appear for the VM harness (and an operator's serial log) to see them.
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200"
GRUB_SETUP_PATH = "/usr/local/sbin/imagegen-grub-setup"
GRUB_OK = "IMAGEGEN-GRUB-OK"
GRUB_FAILED = "IMAGEGEN-GRUB-FAILED"
BUNDLE_DIR = "/opt/imagegen/bundle"
DATASOURCES = ("NoCloud", "ConfigDrive", "VMware", "None")


@dataclass(frozen=True)
class RootFile:
    path: str  # absolute path inside the image
    content: str
    mode: int = 0o644


def fstab(layout: DiskLayout) -> str:
    return (
        "# <fs> <mountpoint> <type> <options> <dump> <pass>\n"
        f"UUID={layout.root_fs_uuid} / ext4 defaults,errors=remount-ro 0 1\n"
        f"UUID={layout.esp_fs_uuid} /boot/efi vfat umask=0077,nofail 0 2\n"
    )


def default_grub() -> str:
    return (
        "# Written by imagegen: serial and VGA console, short menu (the image also boots unattended under OVMF).\n"
        "GRUB_DEFAULT=0\n"
        "GRUB_TIMEOUT=1\n"
        "GRUB_DISTRIBUTOR=Debian\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        f'GRUB_CMDLINE_LINUX="{KERNEL_CMDLINE}"\n'
        'GRUB_TERMINAL="console serial"\n'
        'GRUB_SERIAL_COMMAND="serial --speed=115200"\n'
        "GRUB_DISABLE_OS_PROBER=true\n"
        "GRUB_DISABLE_RECOVERY=true\n"
    )


def cloud_cfg() -> str:
    doc = {
        # Local sources first; None keeps first boot going (fallback DHCP) when nothing is attached.
        "datasource_list": list(DATASOURCES),
        # minbase has no ifupdown: render network-config for systemd-networkd, which the image enables.
        "system_info": {"network": {"renderers": ["networkd"]}},
        # minbase has no locale data beyond C.UTF-8; cloud-init's locale step fails on anything else.
        "locale": "C.UTF-8",
        # RSA host key generation costs tens of seconds under TCG; ed25519 and ECDSA cover every current client.
        "ssh_genkeytypes": ["ed25519", "ecdsa"],
        # Printing host keys to the console takes seconds under TCG and floods the serial log the harness reads.
        "ssh": {"emit_keys_to_console": False},
        # grub-dpkg records debconf answers for the grub-pc package, which the image does not have; it only
        # spends ~15 s probing disks on every first boot.
        "grub_dpkg": {"enabled": False},
    }
    return "# Written by imagegen.\n" + json.dumps(doc, indent=2, sort_keys=True) + "\n"


def ssh_hostkeys_dropin() -> str:
    # Host keys are removed from the template; cloud-init makes new ones, this covers a boot without cloud-init
    # (and does not add the RSA key cloud-init deliberately skipped).
    return ("[Service]\nExecStartPre=-/bin/sh -c "
            "'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || /usr/bin/ssh-keygen -A'\n")


def grub_setup_script(layout: DiskLayout) -> str:
    """PID 1 of the one-shot boot that installs GRUB: the guest kernel can mount what the host kernel cannot."""
    return f"""#!/bin/sh
# Runs once as init= in a throw-away boot of the image's own kernel, then powers off. Removed afterwards.
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
step=start
fail() {{ echo "{GRUB_FAILED} step=$step" >/dev/console; sync; echo o >/proc/sysrq-trigger; sleep 60; }}
trap fail EXIT
step=mounts
# The initramfs has already moved /proc, /sys and /dev onto the real root.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw /
# No udev here: give grub-mkconfig the by-uuid links it checks before writing root=UUID=.
mkdir -p /dev/disk/by-uuid
ln -sf ../../vda3 /dev/disk/by-uuid/{layout.root_fs_uuid}
ln -sf ../../vda2 /dev/disk/by-uuid/{layout.esp_fs_uuid}
mkdir -p /boot/efi
mount -t vfat /dev/vda2 /boot/efi
step=grub-install-bios
grub-install --target=i386-pc /dev/vda
step=grub-install-efi
grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram
step=update-grub
update-grub
step=verify
test -s /boot/efi/EFI/BOOT/BOOTX64.EFI
grep -q 'root=UUID={layout.root_fs_uuid}' /boot/grub/grub.cfg
step=finish
umount /boot/efi
rm -f {GRUB_SETUP_PATH}
rm -rf /dev/disk
sync
# This script is still open (and now deleted), so a plain remount,ro is refused: sysrq forces it.
echo u >/proc/sysrq-trigger
trap - EXIT
echo "{GRUB_OK}" >/dev/console
echo o >/proc/sysrq-trigger
sleep 60
"""


def customize_script(spec: ImageSpec) -> str:
    """mmdebstrap --customize-hook body: $1 root directory, $2 staged files, $3 bundle directory (or empty).

    Host paths arrive as arguments so the script text, which is part of the cache key, does not depend on them.
    """
    q = shlex.quote
    removes = "\n".join(f'rm -f "$root"{q(p)}' for p in spec.remove_files)
    disables = (f'chroot "$root" systemctl disable {" ".join(q(s) for s in spec.disabled_services)}'
                if spec.disabled_services else "")
    return f"""set -eu
root="$1"
staging="$2"
bundle="${{3:-}}"
cp -a "$staging"/. "$root"/
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service ssh.service
# Role services (Docker, containerd, nginx, keepalived) start only on the nodes whose bootstrap enables them.
{disables}
# Rebuild the initramfs with fsck for ext4 (the staged FSTYPE): mmdebstrap made it before /etc/fstab existed.
chroot "$root" update-initramfs -u -k all
# Persistent journal: node preparation sizes it with a journald drop-in.
mkdir -p "$root"/var/log/journal
{removes}
if [ -n "$bundle" ]; then
  mkdir -p "$root"{BUNDLE_DIR}
  cp -a "$bundle"/. "$root"{BUNDLE_DIR}/
fi
# Template hygiene: every clone gets its own identity on first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root"/etc/machine-id
if [ -e "$root"/var/lib/dbus/machine-id ] && [ ! -L "$root"/var/lib/dbus/machine-id ]; then
  rm -f "$root"/var/lib/dbus/machine-id
fi
chroot "$root" cloud-init clean --logs
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
find "$root"/var/log -type f -exec truncate -s 0 {{}} +
rm -f "$root"/root/.bash_history
"""


def root_files(spec: ImageSpec, layout: DiskLayout) -> tuple[RootFile, ...]:
    release = {"name": spec.name, "kernel": spec.kernel.value, "suite": spec.suite}
    return (
        RootFile("/etc/fstab", fstab(layout)),
        RootFile("/etc/default/grub", default_grub()),
        RootFile("/etc/default/locale", "LANG=C.UTF-8\n"),
        # The fsck hook cannot probe the root device inside a chroot; naming the type puts e2fsck in the initramfs.
        RootFile("/etc/initramfs-tools/conf.d/imagegen-fstype.conf", "FSTYPE=ext4\n"),
        RootFile("/etc/hostname", "localhost\n"),
        RootFile("/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"),
        RootFile("/etc/cloud/cloud.cfg.d/90_imagegen.cfg", cloud_cfg()),
        RootFile("/etc/systemd/system/ssh.service.d/imagegen-hostkeys.conf", ssh_hostkeys_dropin()),
        RootFile("/etc/imagegen/image.json", json.dumps(release, sort_keys=True) + "\n"),
        RootFile(GRUB_SETUP_PATH, grub_setup_script(layout), 0o755),
    )


def _module_name(path: str) -> str:
    name = path.strip().rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


def missing_modules(required: tuple[str, ...], modules_dep: str, modules_builtin: str) -> list[str]:
    """Modules in `required` the kernel has neither built in nor as a loadable module (dash/underscore alike)."""
    have = {_module_name(line.split(":", 1)[0]) for line in modules_dep.splitlines() if line.strip()}
    have |= {_module_name(line) for line in modules_builtin.splitlines() if line.strip()}
    return [m for m in required if m.replace("-", "_") not in have]
