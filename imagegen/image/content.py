"""What the builder writes into the root filesystem and the scripts it runs: pure text from spec + layout.

The scripts are templates in profiles/images/scripts/. The rendered texts are part of the cache key, so any change
here or there is a new image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

from imagegen.image.layout import DiskLayout
from imagegen.image.spec import ImageSpec
from imagegen.templates import environment_over

# The last console= wins /dev/console: the serial port, where cloud-init's final_message and imagegen's markers
# must appear for the VM harness (and an operator's serial log) to see them.
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200"
GRUB_SETUP_PATH = "/usr/local/sbin/imagegen-grub-setup"
GRUB_OK = "IMAGEGEN-GRUB-OK"
GRUB_FAILED = "IMAGEGEN-GRUB-FAILED"
BUNDLE_DIR = "/opt/imagegen/bundle"
DATASOURCES = ("NoCloud", "ConfigDrive", "VMware", "None")
# The shell scripts the builder runs, as data beside the image specs (rendered like the node's cloud-init/).
SCRIPTS = "profiles/images/scripts"
_PLAIN_WORD = re.compile(r"[A-Za-z0-9._/-]+")


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
    # Block YAML with flow lists: ds-identify (cloud-init's generator, a shell script) reads datasource_list only
    # from a line `datasource_list: [...]`; from the JSON this used to be it fell back to probing ~27 sources.
    return "# Written by imagegen.\n" + yaml.safe_dump(doc, default_flow_style=None, sort_keys=True)


def ssh_hostkeys_dropin() -> str:
    # Host keys are removed from the template; cloud-init makes new ones, this covers a boot without cloud-init
    # (and does not add the RSA key cloud-init deliberately skipped).
    return ("[Service]\nExecStartPre=-/bin/sh -c "
            "'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || /usr/bin/ssh-keygen -A'\n")


def _script(name: str, **context: object) -> str:
    return environment_over(SCRIPTS).get_template(name).render(**context)


def _plain_words_script(name: str, context: dict[str, str]) -> str:
    # The template also puts these inside quotes, where only a word needing no quoting is safe.
    odd = [f"{k}={v!r}" for k, v in context.items() if not _PLAIN_WORD.fullmatch(v)]
    if odd:
        raise ValueError(f"{name}: not plain words: {', '.join(odd)}")
    return _script(name, **context)


def grub_setup_script(layout: DiskLayout) -> str:
    """PID 1 of the one-shot boot that installs GRUB: the guest kernel can mount what the host kernel cannot."""
    context = {"root_fs_uuid": layout.root_fs_uuid, "esp_fs_uuid": layout.esp_fs_uuid,
               "setup_path": GRUB_SETUP_PATH, "ok_marker": GRUB_OK, "failed_marker": GRUB_FAILED}
    return _plain_words_script("grub-setup.sh.j2", context)


# --- The preload boot: an image with a baked bundle gets its image archives imported into containerd's storage ---
PRELOAD_PATH = "/usr/local/sbin/imagegen-preload-images"
PRELOAD_OK = "IMAGEGEN-PRELOAD-OK"
PRELOAD_FAILED = "IMAGEGEN-PRELOAD-FAILED"
# What the preload boot imported, one archive a line: sha256, path in the bundle, image references. The node's
# runtime seam reads it (PRELOAD_RECORD in cloud-init/node/bundle.sh.j2 names the same path).
PRELOAD_RECORD = "/opt/imagegen/preloaded-images"


def preload_script() -> str:
    """PID 1 of the boot that imports the baked bundle's image archives into the image's own containerd."""
    context = {"bundle_dir": BUNDLE_DIR, "record_path": PRELOAD_RECORD, "setup_path": PRELOAD_PATH,
               "ok_marker": PRELOAD_OK, "failed_marker": PRELOAD_FAILED}
    return _plain_words_script("preload-images.sh.j2", context)


def preload_files(spec: ImageSpec) -> tuple[RootFile, ...]:
    """What the preload boot needs in the root filesystem: its script, for a spec with a bundle only."""
    return (RootFile(PRELOAD_PATH, preload_script(), 0o755),) if spec.bundle else ()


def customize_script(spec: ImageSpec) -> str:
    """mmdebstrap --customize-hook body: $1 root directory, $2 staged files, $3 bundle directory (or empty).

    Host paths arrive as arguments so the script text, which is part of the cache key, does not depend on them.
    """
    return _script("customize-hook.sh.j2", disabled_services=spec.disabled_services,
                   remove_files=spec.remove_files, bundle_dir=BUNDLE_DIR)


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
