"""The lab's repositories and registry (vm-tests/lab/), proven with the programs that consume them, no VMs:
real apt-get (private root, the stock image's dpkg status) accepts the throwaway key and resolves what
kube_repo_install pins, running the rendered distro.sh function itself; each role's rendered pkg_ensure gets its
PACKAGES from the lab's Debian repository alone on top of the stock image, which holds every package group;
dpkg-deb shows the .debs' paths; skopeo reads the images from the running registry through the host a rendered
hosts.toml names; and every request the lab could not answer (404) fails.

Needs the bundle (`make bundle`), apt-get, dpkg-deb, gpg and skopeo, and the lab built
(`python vm-tests/lab/repo.py build`, ~40 s with Debian's mirror); IMAGEGEN_LAB_REPO_TESTS=1 builds it here.
Without them (CI's fresh machine) everything but the plan checks is skipped at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from imagegen.plan import load_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "vm-tests"))

from lab import repo as labrepo  # noqa: E402
from lab.aptroot import PrivateApt  # noqa: E402
from lab.registry import mirror_path  # noqa: E402

STOCK_PLAN = ROOT / "vm-tests" / "plans" / "cluster-stock.yaml"
KUBE_PINS = ("kubeadm=1.20.2-1.1", "kubelet=1.20.2-1.1", "kubectl=1.20.2-1.1")
OPT_IN = os.environ.get("IMAGEGEN_LAB_REPO_TESTS") == "1"


def _skip_reason() -> str:
    if labrepo.missing_tools():
        return f"needs {', '.join(labrepo.missing_tools())}"
    if not (labrepo.BUNDLE / "manifest.json").is_file():
        return f"no bundle at {labrepo.BUNDLE} (make bundle)"
    if not OPT_IN and not labrepo.is_current():
        return "lab repository not built or stale: python vm-tests/lab/repo.py build, or IMAGEGEN_LAB_REPO_TESTS=1"
    return ""


SKIP = _skip_reason()
needs_lab = pytest.mark.skipif(bool(SKIP), reason=SKIP)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[labrepo.LabRepos]:
    if OPT_IN:
        labrepo.build()
    with labrepo.LabRepos("127.0.0.1", http_port=0, registry_port=0,
                          log_dir=tmp_path_factory.mktemp("lab-logs")) as repos:
        yield repos


def stock_root(path: Path, lab: labrepo.LabRepos) -> PrivateApt:
    """A private apt root whose dpkg status is the stock image's and whose only source is the lab's Debian
    repository, signed-by the lab key: a stock node pointed at the lab's mirror."""
    apt = PrivateApt(path)
    apt.setup(lab.debian_source(str(lab.keyring)) + "\n")
    shutil.copyfile(labrepo.CACHE / "apt" / "var/lib/dpkg/status", path / "var/lib/dpkg/status")
    return apt


def render_stock(tmp: Path, lab: labrepo.LabRepos) -> dict[str, dict[str, str]]:
    """cluster-stock.yaml rendered with its lab URLs moved to `lab`'s: each node's write_files by path."""
    data = yaml.safe_load(STOCK_PLAN.read_text())
    data["cluster"]["package_repository"] = lab.kubernetes_url
    data["cluster"]["mirrors"] = {h: {"endpoints": [lab.registry_url]} for h in data["cluster"]["mirrors"]}
    plan_file = tmp / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    plan = load_plan(plan_file)
    artifacts = render_cluster(plan, ensure_state(tmp / "state", plan))
    out = {}
    for node in plan.nodes:
        user_data = yaml.safe_load(artifacts[f"nodes/{node.name}/user-data"].data)
        out[node.name] = {f["path"]: f["content"] for f in user_data["write_files"]}
    return out


@pytest.fixture(scope="module")
def stock_files(lab: labrepo.LabRepos, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    return render_stock(tmp_path_factory.mktemp("stock-render"), lab)


def node_shell(tmp: Path, apt: PrivateApt, distro: str) -> tuple[Path, dict[str, str]]:
    """The rendered distro.sh with /etc/apt/ moved into the private root, and an environment whose apt-get only
    downloads (install gets --download-only), whose dpkg-query reads the private root's status and whose
    apt-mark only records its calls (tmp/calls)."""
    root = apt.root
    (tmp / "distro.sh").write_text(distro.replace("/etc/apt/", f"{root}/etc/apt/"))
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text('#!/bin/sh\n[ "$1" = install ] && exec /usr/bin/apt-get "$@" --download-only\n'
                                     'exec /usr/bin/apt-get "$@"\n')
    (bin_dir / "dpkg-query").write_text(f'#!/bin/sh\nexec /usr/bin/dpkg-query --admindir={root}/var/lib/dpkg "$@"\n')
    (bin_dir / "apt-mark").write_text(f'#!/bin/sh\necho "apt-mark $*" >>{tmp}/calls\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return tmp / "distro.sh", {**apt.env, "PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp),
                               "GNUPGHOME": str(tmp / "gnupg")}


def test_stock_plan_points_at_the_lab_urls() -> None:
    """What cluster-stock.yaml names is where LabRepos serves on the lab bridge (10.82.0.1, 8080 and 5000)."""
    plan = load_plan(STOCK_PLAN)
    gateway = str(plan.network.gateway)
    assert plan.bundle.source == "online"
    assert plan.cluster.package_repository == \
        f"http://{gateway}:8080/{labrepo.kube_path(str(plan.cluster.kubernetes_version))}"
    assert {m.host: m.endpoints for m in plan.cluster.mirrors} == {
        h: (f"http://{gateway}:5000",) for h in ("docker.io", "imagegen.local", "k8s.gcr.io")}
    assert plan.cluster.image_repository == "k8s.gcr.io"


@needs_lab
def test_kube_repo_install_runs_against_the_lab_repository(
        lab: labrepo.LabRepos, stock_files: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """The rendered kube_repo_install itself (only /etc/apt/ moved into a private root, apt-get limited to
    --download-only, apt-mark recorded): curl fetches Release.key, gpg dearmors it, apt-get update verifies
    InRelease with it through signed-by, and apt resolves the exact pins plus cri-tools and kubernetes-cni, with
    the Debian dependencies from the lab's Debian repository on top of the stock image."""
    worker = next(n for n in stock_files if "worker" in n)
    root = tmp_path / "root"
    apt = stock_root(root, lab)
    script, env = node_shell(tmp_path, apt, stock_files[worker]["/usr/local/lib/imagegen/distro.sh"])
    done = subprocess.run(["bash", "-c", f"umask 077\n. {script}\nkube_repo_install {lab.kubernetes_url} "
                           "1.20.2 1.1 && echo DONE"], capture_output=True, text=True, env=env, timeout=300)
    assert "DONE" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "signature" not in done.stderr.lower() and "NO_PUBKEY" not in done.stderr, done.stderr

    keyring = root / "etc/apt/keyrings/kubernetes-apt-keyring.gpg"
    assert keyring.read_bytes() == lab.keyring.read_bytes()  # Release.key, dearmored as the node does it
    # Under the node program's umask 077, still readable by apt's unprivileged _apt user (gpgv runs as it).
    for public in (keyring, root / "etc/apt/sources.list.d/kubernetes.list",
                   root / "etc/apt/preferences.d/imagegen-kubernetes"):
        assert public.stat().st_mode & 0o777 == 0o644, public
    assert (root / "etc/apt/sources.list.d/kubernetes.list").read_text() == \
        f"deb [signed-by={keyring}] {lab.kubernetes_url} /\n"
    archives = {p.name for p in (root / "var/cache/apt/archives").glob("*.deb")}
    for pin in KUBE_PINS:
        name, version = pin.split("=")
        assert f"{name}_{version}_amd64.deb" in archives, sorted(archives)
    assert {"cri-tools_1.25.0-1.1_amd64.deb", "kubernetes-cni_1.1.1-1.1_amd64.deb"} <= archives
    # kubelet's Debian dependencies the stock image lacks came from the lab's Debian repository.
    assert {n.split("_")[0] for n in archives} >= {"conntrack", "ebtables", "ethtool", "socat"}
    assert (tmp_path / "calls").read_text() == "apt-mark hold kubeadm kubelet kubectl cri-tools kubernetes-cni\n"
    got = {(r.method, r.path, r.status) for r in lab.requests() if r.server == "http"}
    assert ("GET", f"/{lab.index['kubernetes']['path']}Release.key", 200) in got
    assert ("GET", f"/{lab.index['kubernetes']['path']}InRelease", 200) in got
    assert [r for r in lab.missing() if r.server == "http"] == []


@needs_lab
@pytest.mark.parametrize("role", ["load-balancer", "control-plane", "worker"])
def test_each_roles_pkg_ensure_installs_from_the_lab_debian_repository(
        lab: labrepo.LabRepos, stock_files: dict[str, dict[str, str]], tmp_path: Path, role: str) -> None:
    """The rendered pkg_ensure with the node's own PACKAGES (bootstrap.env) on the stock image's dpkg status,
    the lab's Debian repository its only source: it finds what is missing and apt gets all of it."""
    node = next(n for n in load_plan(STOCK_PLAN).nodes if n.role == role).name
    files = stock_files[node]
    env_file = next(v for p, v in files.items() if p.endswith("/bootstrap.env"))
    packages = next(line.split("=", 1)[1].strip("'") for line in env_file.splitlines()
                    if line.startswith("PACKAGES="))
    apt = stock_root(tmp_path / "root", lab)
    script, env = node_shell(tmp_path, apt, files["/usr/local/lib/imagegen/distro.sh"])
    done = subprocess.run(["bash", "-c", f". {script}\npkg_ensure {packages} && echo \"DONE $MISSING_PACKAGES\""],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "DONE" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    missing = done.stdout.split("DONE ", 1)[1].split()
    stock = {s.removeprefix("Package: ") for s in (tmp_path / "root/var/lib/dpkg/status").read_text().splitlines()
             if s.startswith("Package: ")}
    assert missing == [p for p in packages.split() if p not in stock] and missing, (missing, packages)
    fetched = {p.name.split("_")[0] for p in (tmp_path / "root/var/cache/apt/archives").glob("*.deb")}
    assert set(missing) <= fetched
    assert [r for r in lab.missing() if r.server == "http"] == []


@needs_lab
def test_debian_repository_holds_every_group_on_top_of_the_stock_image(lab: labrepo.LabRepos,
                                                                        tmp_path: Path) -> None:
    """With the lab's Debian repository as the only source, apt installs (download only) every package group
    of profiles/distros/debian-12.yaml at once on the stock image; nothing it asks for is missing."""
    apt = stock_root(tmp_path / "root", lab)
    apt.update()
    groups = lab.index["debian"]["groups"]
    wanted = sorted({p for g, pkgs in labrepo.inputs().groups.items() for p in pkgs})
    assert set(groups) >= {"base", "containerd", "docker", "etcd-client", "load-balancer", "registry"}
    fetched = apt.download_only(wanted)
    names = {p.name.split("_")[0] for p in fetched}
    assert {"containerd", "runc", "docker.io", "nginx", "libnginx-mod-stream", "keepalived", "etcd-client",
            "containernetworking-plugins", "ipvsadm", "docker-compose"} <= names
    assert [r for r in lab.missing() if r.server == "http"] == []


@needs_lab
def test_apt_refuses_the_lab_repository_without_its_key(lab: labrepo.LabRepos, tmp_path: Path) -> None:
    """The signature is really checked: signed-by Debian's archive keyring instead, apt-get update fails."""
    apt = PrivateApt(tmp_path / "root")
    apt.setup(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {lab.kubernetes_url} /\n")
    with pytest.raises(RuntimeError, match="NO_PUBKEY|not signed|signatures couldn't be verified"):
        apt.update()


def _deb(path: Path, option: str, *members: str) -> str:
    return subprocess.run(["dpkg-deb", option, str(path), *members], capture_output=True, text=True,
                          check=True).stdout


def _deb_file(path: Path, member: str) -> str:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True).stdout
    return subprocess.run(["tar", "-xO", f".{member}"], input=tar, capture_output=True, check=True).stdout.decode()


@needs_lab
def test_kubernetes_debs_have_upstream_names_and_paths(lab: labrepo.LabRepos) -> None:
    """dpkg-deb --info/--contents: pkgs.k8s.io file names, versions and the paths the upstream 1.20 packages
    use; the units start /usr/bin/kubelet, not the bundle's /usr/local/bin/kubelet."""
    repo = labrepo.CACHE / "www" / lab.index["kubernetes"]["path"]
    expected = {
        "kubeadm_1.20.2-1.1_amd64.deb": ["/usr/bin/kubeadm", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"],
        "kubelet_1.20.2-1.1_amd64.deb": ["/usr/bin/kubelet", "/lib/systemd/system/kubelet.service"],
        "kubectl_1.20.2-1.1_amd64.deb": ["/usr/bin/kubectl"],
        "cri-tools_1.25.0-1.1_amd64.deb": ["/usr/bin/crictl"],
        "kubernetes-cni_1.1.1-1.1_amd64.deb": ["/opt/cni/bin/bridge", "/opt/cni/bin/host-local",
                                               "/opt/cni/bin/loopback", "/opt/cni/bin/portmap"],
    }
    assert sorted(p.name for p in (repo / "amd64").glob("*.deb")) == sorted(expected)
    for name, paths in expected.items():
        deb = repo / "amd64" / name
        package, version, _ = name.split("_")
        info = _deb(deb, "--info")
        assert f" Package: {package}\n" in info and f" Version: {version}\n" in info, info
        contents = _deb(deb, "--contents")
        listed = {line.split()[-1].lstrip(".") for line in contents.splitlines()}
        for path in paths:
            assert path in listed, (name, path)
        for line in contents.splitlines():
            assert " root/root " in line, line
            if line.startswith("-") and "/bin/" in line:
                assert line.startswith("-rwxr-xr-x"), line
    kubelet = repo / "amd64" / "kubelet_1.20.2-1.1_amd64.deb"
    assert "ExecStart=/usr/bin/kubelet\n" in _deb_file(kubelet, "/lib/systemd/system/kubelet.service")
    assert "Depends: iptables (>= 1.4.21), kubernetes-cni (>= 0.8.7)" in _deb(kubelet, "--info")
    dropin = _deb_file(repo / "amd64" / "kubeadm_1.20.2-1.1_amd64.deb",
                       "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
    assert "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in dropin and "/usr/local/bin" not in dropin
    # Enabled on install like the upstream package (dh_installsystemd's postinst), so it starts after a reboot.
    assert "deb-systemd-helper enable kubelet.service" in _deb(kubelet, "--info", "postinst")


def _skopeo_inspect(reference: str) -> dict:
    done = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_lab
def test_registry_serves_the_bundle_images_where_the_rendered_hosts_toml_points(
        lab: labrepo.LabRepos, stock_files: dict[str, dict[str, str]]) -> None:
    """A plan whose cluster.mirrors point k8s.gcr.io at the lab registry renders a hosts.toml naming it; skopeo
    reads every image kubeadm 1.20.2 needs from that host, at the path a mirror of k8s.gcr.io is asked for."""
    files = next(f for n, f in stock_files.items() if "worker" in n)
    hosts = tomllib.loads(files["/etc/containerd/certs.d/k8s.gcr.io/hosts.toml"])
    assert hosts["server"] == "https://k8s.gcr.io"
    assert list(hosts["host"]) == [lab.registry_url]
    netloc = urlsplit(lab.registry_url).netloc
    for image in ("kube-apiserver:v1.20.2", "kube-controller-manager:v1.20.2", "kube-scheduler:v1.20.2",
                  "kube-proxy:v1.20.2", "pause:3.2", "etcd:3.4.13-0", "coredns:1.7.0"):
        info = _skopeo_inspect(f"{netloc}/{mirror_path('k8s.gcr.io/' + image)}")
        assert info["Digest"].startswith("sha256:") and info["Architecture"] == "amd64", image
    assert _skopeo_inspect(f"{netloc}/{mirror_path('imagegen.local/busybox:1')}")["Digest"]
    assert [r for r in lab.missing() if r.server == "registry"] == []


@needs_lab
def test_a_request_the_lab_cannot_answer_is_reported(lab: labrepo.LabRepos) -> None:
    netloc = urlsplit(lab.registry_url).netloc
    done = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{netloc}/no-such-image:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    subprocess.run(["curl", "-fsS", "-o", "/dev/null", f"{lab.debian_url}pool/main/absent_1_amd64.deb"],
                   capture_output=True, check=False, timeout=30)
    missing = {(r.server, r.path) for r in lab.missing()}
    assert ("http", f"/{lab.index['debian']['path']}pool/main/absent_1_amd64.deb") in missing
    assert any(server == "registry" and "no-such-image" in path for server, path in missing), missing
