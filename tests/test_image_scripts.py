"""The image builder's shell scripts are data (profiles/images/scripts/*.sh.j2) rendered like the node's templates,
and render to exactly the text the Python f-strings produced before they moved (the text is part of the image cache
key, so a changed byte would rebuild every cached image)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.image import content
from imagegen.image.build import load_spec
from imagegen.image.content import BUNDLE_DIR, GRUB_FAILED, GRUB_OK, GRUB_SETUP_PATH
from imagegen.image.layout import DiskLayout, plan_disk
from imagegen.image.spec import ImageSpec

from .conftest import ROOT, require_tool

EXPECTED_HOOK = ROOT / "tests" / "data" / "image-customize-hook.expected.sh"


# The f-strings as they were in imagegen/image/content.py before the scripts became templates: the reference
# (grub-setup since grew the AppArmor cache step, node.yaml two never-used timers and e2scrub).
def _old_customize_script(spec: ImageSpec) -> str:
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


def _old_grub_setup_script(layout: DiskLayout) -> str:
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
# AppArmor's policy cache, compiled once here by the image's own kernel and parser (the cache is keyed by the kernel's
# AppArmor features): apparmor.service then loads it instead of compiling every profile at each node's first boot
# (2.8-7.9 s of guest CPU under TCG, vm-tests/boot_profile.py).
step=apparmor-cache
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
if [ -x /lib/apparmor/apparmor.systemd ] && [ -d /sys/kernel/security/apparmor ]; then
  /lib/apparmor/apparmor.systemd reload >/dev/null
  ls /var/cache/apparmor/*/* >/dev/null
fi
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


def test_node_customize_hook_is_byte_identical_to_the_captured_f_string_output() -> None:
    # tests/data/image-customize-hook.expected.sh was written by the f-string version, before the move.
    assert content.customize_script(load_spec("node")).encode() == EXPECTED_HOOK.read_bytes()


@pytest.mark.parametrize("kernel", ["cloud", "generic"])
@pytest.mark.parametrize("change", [
    {},
    {"remove_files": ()},
    {"disabled_services": ()},
    {"remove_files": (), "disabled_services": ()},
    {"remove_files": ("/etc/a", "/etc/b c", "/etc/it's")},
    {"disabled_services": ("a.service", "b@x.socket")},
])
def test_customize_hook_matches_the_f_string_for_other_specs(kernel: str, change: dict[str, object]) -> None:
    spec = dataclasses.replace(load_spec("node", kernel=kernel), **change)  # type: ignore[arg-type]
    assert content.customize_script(spec) == _old_customize_script(spec)


@pytest.mark.parametrize("size,identity", [(8, "k"), (8, "31c5c6bb"), (40, "other"), (2, "")])
def test_grub_setup_matches_the_f_string(size: int, identity: str) -> None:
    layout = plan_disk(size, identity)
    assert content.grub_setup_script(layout) == _old_grub_setup_script(layout)


def test_grub_setup_refuses_values_that_would_need_quoting() -> None:
    layout = dataclasses.replace(plan_disk(8, "k"), root_fs_uuid="x' y")
    with pytest.raises(ValueError, match="root_fs_uuid"):
        content.grub_setup_script(layout)


def test_values_are_quoted_with_sh() -> None:
    spec = dataclasses.replace(load_spec("node"), remove_files=("/etc/a b",), disabled_services=("x y.service",))
    script = content.customize_script(spec)
    assert """rm -f "$root"'/etc/a b'""" in script and "systemctl disable 'x y.service'" in script


def test_rendered_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    hook = tmp_path / "customize.sh"
    hook.write_text(content.customize_script(load_spec("node")))
    setup = tmp_path / "grub-setup.sh"
    setup.write_text(content.grub_setup_script(plan_disk(8, "k")))
    # The hook runs as `sh -eu customize.sh ...` (imagegen.image.mmdebstrap), the setup script as /bin/sh init.
    result = subprocess.run([shellcheck, "-s", "sh", "-S", "style", str(hook), str(setup)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


def test_undefined_template_values_fail_loudly() -> None:
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        content._script("customize-hook.sh.j2", remove_files=(), bundle_dir=BUNDLE_DIR)


_PROBE = """
import json, sys
from imagegen.image import content
from imagegen.image.build import load_spec
spec = load_spec("node")
print(json.dumps({"packages": list(spec.packages), "hook": content.customize_script(spec)}))
"""


def test_specs_distros_and_scripts_come_from_imagegen_data(tmp_path: Path) -> None:
    """IMAGEGEN_DATA (and so an installed wheel's imagegen/_data) is where images find their data too."""
    data = tmp_path / "data"
    for name in ("profiles", "cloud-init"):
        shutil.copytree(ROOT / name, data / name)
    distro = data / "profiles" / "distros" / "debian-12.yaml"
    distro.write_text(distro.read_text().replace("etcd-client: [etcd-client]", "etcd-client: [etcd-client, zzz-here]"))
    hook = data / "profiles" / "images" / "scripts" / "customize-hook.sh.j2"
    hook.write_text(hook.read_text().replace("set -eu\n", "set -eu\n# from IMAGEGEN_DATA\n", 1))
    env = {**os.environ, "IMAGEGEN_DATA": str(data)}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout
    probe = json.loads(out)
    assert "zzz-here" in probe["packages"]
    assert probe["hook"].startswith("set -eu\n# from IMAGEGEN_DATA\n")
