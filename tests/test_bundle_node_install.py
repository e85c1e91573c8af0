"""The node's own bundle functions (the rendered runtime seam, bundle part and install steps), run in bash against a
real packed bundle.

System-changing commands (install, systemctl, ctr, docker) are replaced by shell functions that record their
arguments, so the test sees exactly what a node would install and load. Issue 11: `sha256sum -c` ran without
--strict, the install globs took files SHA256SUMS does not list, and cri-dockerd was always downloaded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagegen.bundle.dockerarchive import ImageConfig, write_docker_archive
from imagegen.bundle.pack import pack_bundle
from tests.conftest import Rendered
from tests.test_bundle_pack import make_inputs, spec_for

PROGRAM = ("runtime", "parts/bundle", "steps/install_runtime", "steps/install_kubernetes")
STUBS = r"""
log() { echo "log: $*" >&2; }
fail() { echo "FAILED $1"; exit 1; }
install() { echo "install $*" >>"$CALLS"; }
systemctl() { echo "systemctl $*" >>"$CALLS"; }
ctr() { echo "ctr $*" >>"$CALLS"; }
docker() { echo "docker $*" >>"$CALLS"; }
mkdir() { :; }
write_marker() { echo "marker $1" >>"$CALLS"; }
wait_socket() { echo "wait_socket $1" >>"$CALLS"; }
install_cri_dockerd() { echo "download cri-dockerd" >>"$CALLS"; }
find_bundle() { echo "$BUNDLE"; }
"""


def functions(rendered: Rendered, node: str) -> str:
    """The node's own files, then the stubs (which replace commands and find_bundle)."""
    return "set -uo pipefail\n" + rendered.program(node, *PROGRAM) + "\n" + STUBS


def run(rendered: Rendered, node: str, bundle: Path, tmp_path: Path, call: str, **env: str) -> tuple[str, list[str]]:
    calls = tmp_path / "calls"
    calls.write_text("")
    script = tmp_path / "t.sh"
    script.write_text(functions(rendered, node) + "\n" + call + "\necho DONE\n")
    variables = {"CALLS": str(calls), "BUNDLE": str(bundle), "NODE_ROLE": "worker", "KUBERNETES_VERSION": "1.20.2",
                 "CONTAINER_RUNTIME": "containerd", "STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin",
                 **env}
    done = subprocess.run(["bash", str(script)], env=variables, capture_output=True, text=True, check=False)
    return done.stdout.strip(), [ln.replace(str(bundle), "B") for ln in calls.read_text().splitlines()]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dirs = make_inputs(tmp_path / "in", binaries=("kubeadm", "kubelet", "kubectl", "crictl"))
    pack_bundle(spec_for(dirs, tmp_path / "bundle", runtime="containerd"))
    return tmp_path / "bundle"


def test_installs_exactly_the_manifest(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    # Files on the disk that manifest.json does not list: a glob would install them, sha256sum -c never sees them.
    for rel in ("bin/evil", "cni/evil", "images/evil.tar"):
        (bundle / rel).write_bytes(b"#!/bin/sh\n")
        (bundle / rel).chmod(0o755)
    out, calls = run(rendered["ha"], "worker-1", bundle, tmp_path, 'install_from_bundle "$BUNDLE"')
    assert out == "DONE", out
    assert not [c for c in calls if "evil" in c], calls
    installs = sorted(c for c in calls if c.startswith("install "))
    assert installs == sorted([
        "install -m 0755 B/bin/crictl /usr/local/bin/", "install -m 0755 B/bin/kubeadm /usr/local/bin/",
        "install -m 0755 B/bin/kubectl /usr/local/bin/", "install -m 0755 B/bin/kubelet /usr/local/bin/",
        "install -m 0755 B/cni/bridge /opt/cni/bin/", "install -m 0755 B/cni/host-local /opt/cni/bin/",
        "install -m 0755 B/cni/loopback /opt/cni/bin/",
        "install -m 0644 B/systemd/10-kubeadm.conf /etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
        "install -m 0644 B/systemd/kubelet.service /etc/systemd/system/"])
    assert "ctr -n k8s.io images import B/images/pause.tar" in calls


def test_docker_loads_the_manifest_images(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    out, calls = run(rendered["single"], "lab-worker-1", bundle, tmp_path, 'install_from_bundle "$BUNDLE"',
                     CONTAINER_RUNTIME="docker")
    assert out == "DONE", out
    assert "docker load -i B/images/pause.tar" in calls


def test_malformed_sums_line_fails_strict(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    # Without --strict, sha256sum warns about the line and still exits 0.
    with (bundle / "SHA256SUMS").open("a") as fh:
        fh.write("this is not a checksum line\n")
    out, calls = run(rendered["ha"], "worker-1", bundle, tmp_path, 'install_from_bundle "$BUNDLE"')
    assert out == "FAILED bundle-checksum-mismatch"
    assert not calls


def test_listed_file_missing_from_sums_fails(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    sums = bundle / "SHA256SUMS"
    sums.write_text("".join(ln for ln in sums.read_text().splitlines(True) if not ln.endswith("  cni/bridge\n")))
    out, calls = run(rendered["ha"], "worker-1", bundle, tmp_path, 'install_from_bundle "$BUNDLE"')
    assert out == "FAILED bundle-file-not-covered:cni/bridge"
    assert not calls


def test_corrupted_file_fails_before_installing(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    with (bundle / "bin/kubelet").open("ab") as fh:
        fh.write(b"\0")
    out, calls = run(rendered["ha"], "worker-1", bundle, tmp_path, 'install_from_bundle "$BUNDLE"')
    assert out.splitlines() == ["bin/kubelet: FAILED", "FAILED bundle-checksum-mismatch"] and not calls


def test_containerd_needs_crictl(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in")
    pack_bundle(spec_for(dirs, tmp_path / "bundle", runtime="docker"))
    out, _ = run(rendered["ha"], "worker-1", tmp_path / "bundle", tmp_path, 'install_from_bundle "$BUNDLE"')
    assert out == "FAILED bundle-without-crictl"


def test_cri_dockerd_from_the_bundle(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=("kubeadm", "kubelet", "kubectl", "cri-dockerd"))
    pack_bundle(spec_for(dirs, tmp_path / "bundle", kubernetes_version="1.28.15"))
    out, calls = run(rendered["k8s-1.28-docker"], "wk-a", tmp_path / "bundle", tmp_path, "step_install_runtime",
                     CONTAINER_RUNTIME="docker", KUBERNETES_VERSION="1.28.15")
    assert out == "DONE", out
    assert "download cri-dockerd" not in calls
    assert "install -m 0755 B/bin/cri-dockerd /usr/local/bin/cri-dockerd" in calls
    assert ("install -m 0644 B/systemd/cri-docker.service B/systemd/cri-docker.socket /etc/systemd/system/"
            in calls)
    assert calls.index("systemctl --no-reload enable --now cri-docker.socket cri-docker.service") < calls.index(
        "wait_socket /var/run/cri-dockerd.sock")


def test_cri_dockerd_downloaded_without_a_bundle_copy(rendered: dict[str, Rendered], bundle: Path,
                                                      tmp_path: Path) -> None:
    out, calls = run(rendered["k8s-1.28-docker"], "wk-a", bundle, tmp_path, "step_install_runtime",
                     CONTAINER_RUNTIME="docker")
    assert out == "DONE", out
    assert "download cri-dockerd" in calls


def test_containerd_node_stops_docker(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path) -> None:
    out, calls = run(rendered["ha"], "worker-1", bundle, tmp_path, "step_install_runtime")
    assert out == "DONE", out
    assert calls.index("systemctl --no-reload disable --now docker.socket docker.service") < calls.index(
        "systemctl restart containerd")
    assert "wait_socket /run/containerd/containerd.sock" in calls


# --- images preloaded at image build (profiles/images/scripts/preload-images.sh.j2 writes the record) -------------

PRELOAD_CALL = r"""
log() { echo "log: $*" >>"$CALLS"; }
# containerd's image list: what the preload boot left (IMAGES), answered as `ctr -n k8s.io images ls -q` does.
ctr() {
  echo "ctr $*" >>"$CALLS"
  if [ "$*" = "-n k8s.io images ls -q" ]; then printf '%s\n' $IMAGES; fi
  return 0
}
PRELOAD_RECORD=$RECORD
"""
ETCD_TAGS = ("k8s.gcr.io/etcd:3.4.13-0", "imagegen.local/etcd:3.4.23")


def pack_two_images(root: Path) -> Path:
    """A containerd bundle under root/bundle with pause (a worker runs it) and etcd (two tags; control planes
    only)."""
    dirs = make_inputs(root / "in", binaries=("kubeadm", "kubelet", "kubectl", "crictl"))
    write_docker_archive(dirs["images"] / "etcd.tar", list(ETCD_TAGS), [root / "in" / "layer.tar"],
                         ImageConfig(entrypoint=("/etcd",)))
    pack_bundle(spec_for(dirs, root / "bundle", runtime="containerd"))
    return root / "bundle"


@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    return pack_two_images(tmp_path)


def sums(bundle: Path) -> dict[str, str]:
    return {ln.split("  ", 1)[1]: ln.split("  ", 1)[0] for ln in (bundle / "SHA256SUMS").read_text().splitlines()}


def write_record(path: Path, rows: list[tuple[str, str, tuple[str, ...]]]) -> Path:
    """The preload record as the image build writes it: comment lines, then sha256 TAB archive TAB references."""
    path.write_text("# Written by the image build\n# sha256, archive, references\n"
                    + "".join(f"{s}\t{a}\t{' '.join(r)}\n" for s, a, r in rows))
    return path


def run_preloaded(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path, rows: list, images: tuple[str, ...],
                  role: str = "control-plane", runtime: str = "containerd") -> tuple[str, list[str]]:
    record = write_record(tmp_path / "preloaded-images", rows)
    node, plan = ("lab-worker-1", "single") if runtime == "docker" else ("worker-1", "ha")
    return run(rendered[plan], node, bundle, tmp_path, PRELOAD_CALL + 'install_from_bundle "$BUNDLE"',
               RECORD=str(record), IMAGES=" ".join(images), NODE_ROLE=role, CONTAINER_RUNTIME=runtime)


def imports(calls: list[str]) -> list[str]:
    return [c.split()[-1] for c in calls if c.startswith(("ctr -n k8s.io images import", "docker load"))]


def test_preloaded_archives_are_not_imported_or_hashed(rendered: dict[str, Rendered], two_images: Path,
                                                      tmp_path: Path) -> None:
    s = sums(two_images)
    rows = [(s["images/etcd.tar"], "images/etcd.tar", ETCD_TAGS), (s["images/pause.tar"], "images/pause.tar",
                                                                    ("k8s.gcr.io/pause:3.2",))]
    # The preloaded archives' bytes are not read at this boot: a damaged copy changes nothing.
    (two_images / "images" / "etcd.tar").write_bytes(b"damaged")
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, (*ETCD_TAGS, "k8s.gcr.io/pause:3.2"))
    assert out == "DONE", out
    assert imports(calls) == []
    logged = [c for c in calls if c.startswith("log: image ")]
    assert logged == ["log: image images/etcd.tar: preloaded at image build, not imported",
                      "log: image images/pause.tar: preloaded at image build, not imported"]
    assert any("not hashing the preloaded" in c for c in calls), calls
    # Everything it installs is still from the bundle.
    assert "install -m 0755 B/bin/kubelet /usr/local/bin/" in calls


def test_installed_files_are_still_hashed_when_images_are_preloaded(rendered: dict[str, Rendered],
                                                                   two_images: Path, tmp_path: Path) -> None:
    s = sums(two_images)
    rows = [(s["images/pause.tar"], "images/pause.tar", ("k8s.gcr.io/pause:3.2",))]
    with (two_images / "bin/kubelet").open("ab") as fh:
        fh.write(b"\0")
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, ("k8s.gcr.io/pause:3.2",), role="worker")
    assert out.splitlines() == ["bin/kubelet: FAILED", "FAILED bundle-checksum-mismatch"]
    assert not [c for c in calls if c.startswith("install ")]


def test_an_archive_with_another_sha256_is_imported(rendered: dict[str, Rendered], two_images: Path,
                                                   tmp_path: Path) -> None:
    s = sums(two_images)
    rows = [("0" * 64, "images/etcd.tar", ETCD_TAGS), (s["images/pause.tar"], "images/pause.tar",
                                                       ("k8s.gcr.io/pause:3.2",))]
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, (*ETCD_TAGS, "k8s.gcr.io/pause:3.2"))
    assert out == "DONE", out
    assert imports(calls) == ["B/images/etcd.tar"]
    assert "log: image images/etcd.tar: importing" in calls
    assert "log: image images/pause.tar: preloaded at image build, not imported" in calls


def test_an_imported_archive_is_hashed(rendered: dict[str, Rendered], two_images: Path, tmp_path: Path) -> None:
    # Record and SHA256SUMS disagree about etcd.tar: it is imported, so its bytes must match SHA256SUMS.
    s = sums(two_images)
    (two_images / "images" / "etcd.tar").write_bytes(b"damaged")
    rows = [("0" * 64, "images/etcd.tar", ETCD_TAGS), (s["images/pause.tar"], "images/pause.tar",
                                                       ("k8s.gcr.io/pause:3.2",))]
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, (*ETCD_TAGS, "k8s.gcr.io/pause:3.2"))
    assert out.splitlines() == ["images/etcd.tar: FAILED", "FAILED bundle-checksum-mismatch"]
    assert imports(calls) == []


@pytest.mark.parametrize("images", [
    ("k8s.gcr.io/etcd:3.4.13-0", "k8s.gcr.io/pause:3.2"),  # one of etcd's two references is gone
    ("k8s.gcr.io/pause:3.2",),
])
def test_an_archive_with_a_missing_reference_is_imported(rendered: dict[str, Rendered], two_images: Path,
                                                        tmp_path: Path, images: tuple[str, ...]) -> None:
    s = sums(two_images)
    rows = [(s["images/etcd.tar"], "images/etcd.tar", ETCD_TAGS), (s["images/pause.tar"], "images/pause.tar",
                                                                    ("k8s.gcr.io/pause:3.2",))]
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, images)
    assert out == "DONE", out
    assert imports(calls) == ["B/images/etcd.tar"]


def test_without_a_record_every_archive_is_imported(rendered: dict[str, Rendered], two_images: Path,
                                                    tmp_path: Path) -> None:
    # A plain image with the bundle on a disk: no record, so no `ctr images ls` either.
    out, calls = run(rendered["ha"], "worker-1", two_images, tmp_path, PRELOAD_CALL + 'install_from_bundle "$BUNDLE"',
                     RECORD=str(tmp_path / "absent"), IMAGES="", NODE_ROLE="control-plane")
    assert out == "DONE", out
    assert imports(calls) == ["B/images/etcd.tar", "B/images/pause.tar"]
    assert "ctr -n k8s.io images ls -q" not in calls
    assert "log: image images/pause.tar: importing" in calls


def test_a_record_line_without_references_is_not_preloaded(rendered: dict[str, Rendered], two_images: Path,
                                                           tmp_path: Path) -> None:
    s = sums(two_images)
    out, calls = run_preloaded(rendered, two_images, tmp_path, [(s["images/pause.tar"], "images/pause.tar", ())],
                               ("k8s.gcr.io/pause:3.2",), role="worker")
    assert out == "DONE", out
    assert imports(calls) == ["B/images/pause.tar"]


def test_docker_always_loads(rendered: dict[str, Rendered], two_images: Path, tmp_path: Path) -> None:
    # Docker's storage is never preloaded, whatever the record says.
    s = sums(two_images)
    rows = [(s["images/pause.tar"], "images/pause.tar", ("k8s.gcr.io/pause:3.2",))]
    out, calls = run_preloaded(rendered, two_images, tmp_path, rows, ("k8s.gcr.io/pause:3.2",), role="worker",
                               runtime="docker")
    assert out == "DONE", out
    assert imports(calls) == ["B/images/pause.tar"]
    assert "log: image images/pause.tar: importing" in calls


def test_verify_refuses_to_skip_an_installed_file(rendered: dict[str, Rendered], two_images: Path,
                                                  tmp_path: Path) -> None:
    out, _ = run(rendered["ha"], "worker-1", two_images, tmp_path, 'verify_bundle "$BUNDLE" bin/kubelet')
    assert out == "FAILED bundle-installed-file-not-hashed:bin/kubelet"


def test_a_malformed_sums_line_fails_even_when_skipping(rendered: dict[str, Rendered], two_images: Path,
                                                        tmp_path: Path) -> None:
    with (two_images / "SHA256SUMS").open("a") as fh:
        fh.write("images/pause.tar\n")
    out, _ = run(rendered["ha"], "worker-1", two_images, tmp_path, 'verify_bundle "$BUNDLE" images/pause.tar')
    assert out == "FAILED bundle-checksum-mismatch"
