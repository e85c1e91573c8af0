"""containerd's own parser over every rendered config.toml: Debian's containerd 1.6 (bookworm), 1.7 (trixie) and 2.x
(sid), unpacked by tools/install-test-deps.sh (never installed). `containerd --config FILE config dump` parses the
file and prints the effective configuration without starting a daemon; the effective values are asserted, so a
misspelt key (silently ignored by containerd) or a wrong table fails here. containerd 2.x migrates a version 2 file
to version 3 on load: the migrated keys are checked there.

Also the registry hosts.toml files, parsed as TOML with the shape containerd's hosts.toml reader expects."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from imagegen import kubeadm
from imagegen.plan import load_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state
from tests.conftest import CACHE, ROOT, Rendered

SUITES = ("bookworm", "trixie", "sid")  # containerd 1.6, 1.7, 2.x
CONFIG = "/etc/containerd/config.toml"
CERTS_D = "/etc/containerd/certs.d"
V2_CRI = "io.containerd.grpc.v1.cri"


def containerd(suite: str) -> Path:
    binary = CACHE / "containerd" / suite / "root" / "usr" / "bin" / "containerd"
    if not binary.exists():
        pytest.fail(f"containerd ({suite}) is not unpacked under {binary.parent}: run `make deps`")
    return binary


@pytest.fixture(scope="module")
def configs(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """{label: (config.toml text, the plan's pause image)}, one per distinct rendered file, the cluster-test plan
    (vm-tests/plans/cluster.yaml, booted with containerd) included."""
    sources = dict(rendered)
    cluster = load_plan(ROOT / "vm-tests" / "plans" / "cluster.yaml")
    state = ensure_state(tmp_path_factory.mktemp("state-cluster-test"), cluster)
    sources["cluster-test"] = Rendered(cluster, state, render_cluster(cluster, state))
    out: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    for name, r in sorted(sources.items()):
        for node in r.plan.nodes:
            files = r.files(node.name)
            if CONFIG in files and files[CONFIG]["content"] not in seen:
                seen.add(files[CONFIG]["content"])
                out[f"{name}/{node.name}"] = (files[CONFIG]["content"], kubeadm.pause_image(r.plan))
    return out


def test_containerd_plans_are_covered(configs: dict[str, tuple[str, str]]) -> None:
    plans = {label.split("/")[0] for label in configs}
    assert {"ha", "kube-vip", "cluster-test"} <= plans, plans


def dump(suite: str, text: str, tmp_path: Path) -> dict:
    path = tmp_path / f"config-{suite}.toml"
    path.write_text(text)
    done = subprocess.run([str(containerd(suite)), "--config", str(path), "config", "dump"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, f"containerd ({suite}) rejected the config: {done.stderr[-1500:]}"
    return tomllib.loads(done.stdout)


def dig(doc: object, *keys: str) -> object:
    """doc[k1][k2]..., or None where a key is absent (the comparison then names the setting)."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def effective(suite: str, eff: dict) -> dict[str, object]:
    """The settings imagegen relies on, read from wherever this containerd version keeps them."""
    if suite == "sid":
        assert eff["version"] == 3, "containerd 2.x should migrate imagegen's version 2 file to version 3"
        images = dig(eff, "plugins", "io.containerd.cri.v1.images")
        runtime = dig(eff, "plugins", "io.containerd.cri.v1.runtime")
        runc = dig(runtime, "containerd", "runtimes", "runc")
        return {
            "sandbox": dig(images, "pinned_images", "sandbox"),
            "config_path": dig(images, "registry", "config_path"),
            "systemd_cgroup": dig(runc, "options", "SystemdCgroup"),
            "runtime_type": dig(runc, "runtime_type"),
            # 2.1 migrates bin_dir to the list bin_dirs (and leaves bin_dir empty).
            "cni_bin_dirs": dig(runtime, "cni", "bin_dirs") or [dig(runtime, "cni", "bin_dir")],
            "cni_conf_dir": dig(runtime, "cni", "conf_dir"),
        }
    assert eff["version"] == 2
    cri = dig(eff, "plugins", V2_CRI)
    runc = dig(cri, "containerd", "runtimes", "runc")
    return {
        "sandbox": dig(cri, "sandbox_image"),
        "config_path": dig(cri, "registry", "config_path"),
        "systemd_cgroup": dig(runc, "options", "SystemdCgroup"),
        "runtime_type": dig(runc, "runtime_type"),
        "cni_bin_dirs": [dig(cri, "cni", "bin_dir")],
        "cni_conf_dir": dig(cri, "cni", "conf_dir"),
    }


@pytest.mark.parametrize("suite", SUITES)
def test_containerd_parses_every_rendered_config(suite: str, configs: dict[str, tuple[str, str]],
                                                 tmp_path: Path) -> None:
    assert configs
    for label, (text, pause) in configs.items():
        got = effective(suite, dump(suite, text, tmp_path))
        assert got == {
            "sandbox": pause,
            "config_path": CERTS_D,
            "systemd_cgroup": True,
            "runtime_type": "io.containerd.runc.v2",
            "cni_bin_dirs": ["/opt/cni/bin"],
            "cni_conf_dir": "/etc/cni/net.d",
        }, f"{label} under containerd ({suite})"


@pytest.mark.parametrize("suite", SUITES)
def test_a_misspelt_key_is_caught(suite: str, configs: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    """containerd ignores unknown keys; only the effective values show the mistake. Proves the check bites."""
    text, pause = next(iter(configs.values()))
    broken = text.replace("SystemdCgroup = true", "SystemdCgroups = true").replace("sandbox_image", "sandbox_img")
    got = effective(suite, dump(suite, broken, tmp_path))
    assert got["systemd_cgroup"] is not True and got["sandbox"] != pause


def test_hosts_toml_shape(rendered: dict[str, Rendered]) -> None:
    checked = 0
    for r in rendered.values():
        for node in r.plan.nodes:
            for path, entry in r.files(node.name).items():
                if not (path.startswith(CERTS_D + "/") and path.endswith("/hosts.toml")):
                    continue
                doc = tomllib.loads(entry["content"])
                assert str(doc["server"]).startswith("https://"), path
                assert doc.get("host"), f"{path}: no [host.\"...\"] mirror"
                for url, host in doc["host"].items():
                    assert url.startswith(("http://", "https://")), (path, url)
                    assert set(host["capabilities"]) <= {"pull", "resolve", "push"}, (path, url)
                    assert set(host) <= {"capabilities", "override_path", "ca", "skip_verify", "header",
                                         "client"}, (path, url)
                checked += 1
    assert checked


def test_cluster_test_plan_mirror_hosts_toml(tmp_path: Path) -> None:
    """The containerd cluster-test sets a docker.io mirror; its node must get the hosts.toml the VM check reads."""
    plan = load_plan(ROOT / "vm-tests" / "plans" / "cluster.yaml")
    assert plan.cluster.container_runtime == "containerd" and plan.cluster.registry_mirrors
    artifacts = render_cluster(plan, ensure_state(tmp_path / "state", plan))
    worker = next(n for n in plan.nodes if n.role == "worker")
    files = Rendered(plan, None, artifacts).files(worker.name)  # type: ignore[arg-type]
    hosts = tomllib.loads(files[f"{CERTS_D}/docker.io/hosts.toml"]["content"])
    assert set(hosts["host"]) == set(plan.cluster.registry_mirrors)
    assert "unix:///run/containerd/containerd.sock" in files["/etc/crictl.yaml"]["content"]
