"""Kubernetes .deb packages named and laid out as pkgs.k8s.io's, made with `dpkg-deb --build` from the offline
bundle's own files (bin/, cni/, systemd/), so `kube_repo_install` (cloud-init/distro/apt.sh.j2) finds exactly what
it asks for: `kubeadm=1.20.2-1.1 kubelet=1.20.2-1.1 kubectl=1.20.2-1.1 cri-tools kubernetes-cni`.

Paths as the upstream 1.20 packages have them: /usr/bin/{kubeadm,kubelet,kubectl,crictl}, kubelet.service in
/lib/systemd/system, kubeadm's 10-kubeadm.conf drop-in in /etc/systemd/system/kubelet.service.d (pkgs.k8s.io moved
it to /usr/lib/systemd/system/kubelet.service.d from 1.24), CNI plugins in /opt/cni/bin. The bundle's units start
/usr/local/bin/kubelet (where the bundle path installs it); the packages' units start /usr/bin/kubelet.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REVISION = "1.1"                # pkgs.k8s.io's Debian revision (imagegen.nodefacts.PACKAGE_REVISION)
CRI_TOOLS_VERSION = "1.25.0"    # the bundle's crictl (`crictl --version`)
# The bundle's cni/ is Debian bookworm's containernetworking-plugins 1.1.1 (vm-tests/bundle/build.py).
CNI_VERSION = "1.1.1"
MAINTAINER = "imagegen vm-tests lab <lab@imagegen.invalid>"
# What the upstream 1.20 packages depend on (kubernetes/release, kubepkg).
KUBELET_DEPENDS = ("iptables (>= 1.4.21), kubernetes-cni (>= 0.8.7), iproute2, socat, util-linux, mount, ebtables, "
                   "ethtool, conntrack")
KUBEADM_DEPENDS = "kubelet (>= 1.13.0), kubectl (>= 1.13.0), kubernetes-cni (>= 0.8.7), cri-tools (>= 1.13.0)"
BUNDLE_KUBELET = "/usr/local/bin/kubelet"
PACKAGE_KUBELET = "/usr/bin/kubelet"

# dh_installsystemd's postinst, minus the start: enabled like the upstream package, started by kubeadm.
_ENABLE_KUBELET = """#!/bin/sh
set -e
if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
  deb-systemd-helper enable kubelet.service >/dev/null || true
  if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
fi
"""
_RELOAD = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
"""


@dataclass(frozen=True)
class DebSpec:
    package: str
    version: str                       # upstream version; the file and Version: add -REVISION
    description: str
    files: tuple[tuple[str, str], ...]  # (bundle path or "text:<name>", absolute path in the package)
    depends: str = ""
    postinst: str = ""

    @property
    def full_version(self) -> str:
        return f"{self.version}-{REVISION}"

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.full_version}_amd64.deb"


def deb_specs(bundle: Path, kube_version: str) -> list[DebSpec]:
    cni = tuple((f"cni/{p.name}", f"/opt/cni/bin/{p.name}") for p in sorted((bundle / "cni").iterdir()))
    return [
        DebSpec("kubeadm", kube_version, "Kubernetes Cluster Bootstrapping Tool",
                (("bin/kubeadm", "/usr/bin/kubeadm"),
                 ("text:10-kubeadm.conf", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")),
                KUBEADM_DEPENDS, _RELOAD),
        DebSpec("kubelet", kube_version, "Kubernetes Node Agent",
                (("bin/kubelet", PACKAGE_KUBELET), ("text:kubelet.service", "/lib/systemd/system/kubelet.service")),
                KUBELET_DEPENDS, _ENABLE_KUBELET),
        DebSpec("kubectl", kube_version, "Kubernetes Command Line Tool", (("bin/kubectl", "/usr/bin/kubectl"),)),
        DebSpec("cri-tools", CRI_TOOLS_VERSION, "Command-line utility for interacting with a container runtime",
                (("bin/crictl", "/usr/bin/crictl"),)),
        DebSpec("kubernetes-cni", CNI_VERSION, "Binaries required to provision kubernetes container networking",
                cni),
    ]


def unit_texts(bundle: Path) -> dict[str, str]:
    """The bundle's kubelet unit and kubeadm drop-in, starting the packaged kubelet."""
    out = {}
    for name in ("kubelet.service", "10-kubeadm.conf"):
        text = (bundle / "systemd" / name).read_text()
        if BUNDLE_KUBELET not in text:
            raise RuntimeError(f"{bundle}/systemd/{name}: no {BUNDLE_KUBELET} to point at {PACKAGE_KUBELET}")
        out[name] = text.replace(BUNDLE_KUBELET, PACKAGE_KUBELET).replace(
            "(install as\n# /etc/systemd/system/kubelet.service.d/10-kubeadm.conf)", "(packaged by kubeadm)")
    return out


def _control(spec: DebSpec, installed_kib: int) -> str:
    fields = {"Package": spec.package, "Version": spec.full_version, "Architecture": "amd64",
              "Maintainer": MAINTAINER, "Installed-Size": str(installed_kib), "Section": "admin",
              "Priority": "optional", "Homepage": "https://kubernetes.io"}
    if spec.depends:
        fields["Depends"] = spec.depends
    fields["Description"] = f"{spec.description}\n Built for imagegen's lab from its offline Kubernetes bundle."
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def build_deb(spec: DebSpec, bundle: Path, texts: dict[str, str], work: Path, out_dir: Path) -> Path:
    """`dpkg-deb --build` of one package into `out_dir`; returns the .deb."""
    tree = work / spec.package
    shutil.rmtree(tree, ignore_errors=True)
    size = 0
    for source, dest in spec.files:
        target = tree / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith("text:"):
            target.write_text(texts[source.removeprefix("text:")])
            target.chmod(0o644)
        else:
            shutil.copyfile(bundle / source, target)
            target.chmod(0o755)
        size += target.stat().st_size
    debian = tree / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(_control(spec, (size + 1023) // 1024))
    if spec.postinst:
        (debian / "postinst").write_text(spec.postinst)
        (debian / "postinst").chmod(0o755)
    for d in [tree, *tree.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / spec.filename
    # gzip -1: these binaries hardly compress, and xz of kubelet alone takes a minute on a busy host.
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(deb)],
                   capture_output=True, text=True, check=True)
    shutil.rmtree(tree)
    return deb


def build_kube_debs(bundle: Path, kube_version: str, work: Path, out_dir: Path) -> list[Path]:
    texts = unit_texts(bundle)
    return [build_deb(spec, bundle, texts, work, out_dir) for spec in deb_specs(bundle, kube_version)]
