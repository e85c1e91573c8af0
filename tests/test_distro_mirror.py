"""cluster.distro_mirror (issue 12): the distribution's package mirror reaches the node through cloud-init's own apt
module. The rendered user-data goes through the real `cloud-init schema` of Debian bookworm (22.4) and trixie
(25.1), and cloud-init 22.4's own `cc_apt_configure.handle` runs over it with its writes confined to a temporary
root: sources.list holds exactly the plan's lines and the real gpg dearmors the plan's key into trusted.gpg.d."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagegen.cli import main
from imagegen.errors import PlanError
from imagegen.fetches import fetches_by_role
from imagegen.plan import load_plan
from imagegen.render import render_user_data
from imagegen.state import ensure_state

from .conftest import cloud_init_root, require_tool
from .test_cloud_init_schema import SUITES, _schema

URL = "http://10.82.0.1:8080/debian/"

PLAN: dict[str, Any] = {
    "cluster": {"name": "dm", "kubernetes_version": "1.20.2", "cni": "host-gw",
                "distro_mirror": {"url": URL, "key_file": "mirror.asc"}},
    "endpoint": {"mode": "single"},
    "network": {"cidr": "10.9.0.0/24", "gateway": "10.9.0.1"},
    "bundle": {"source": "disk"},
    "nodes": [{"name": "cp-1", "role": "control-plane", "ip": "10.9.0.11", "mac": "52:54:00:00:00:11"}],
}


@pytest.fixture(scope="module")
def armored_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(armored public key, fingerprint) of a throwaway ed25519 key made by the real gpg."""
    gpg = require_tool("gpg")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", "imagegen mirror test <m@invalid>",
                    "ed25519", "sign", "never"], env=env, check=True, capture_output=True, timeout=60)
    armored = subprocess.run([gpg, "--armor", "--export"], env=env, check=True, capture_output=True, text=True,
                             timeout=30).stdout
    listing = subprocess.run([gpg, "--with-colons", "--list-keys"], env=env, check=True, capture_output=True,
                             text=True, timeout=30).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    return armored, fingerprint


def _plan_file(tmp_path: Path, key: str | None, **mirror: Any) -> Path:
    data = json.loads(json.dumps(PLAN))
    data["cluster"]["distro_mirror"].update(mirror)
    if key is not None:
        (tmp_path / "mirror.asc").write_text(key)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(PlanError) as err:
        load_plan(path)
    return [str(p) for p in err.value.problems]


def _user_data(path: Path, tmp_path: Path) -> bytes:
    plan = load_plan(path)
    state = ensure_state(tmp_path / "state", plan)
    return render_user_data(plan, plan.nodes[0], state)


# -- the plan ------------------------------------------------------------------------------------------------------

def test_key_file_is_read_at_load_and_suites_default_to_the_distro(tmp_path: Path,
                                                                   armored_key: tuple[str, str]) -> None:
    plan = load_plan(_plan_file(tmp_path, armored_key[0]))
    m = plan.cluster.distro_mirror
    assert m is not None and m.url == URL and m.key_file == "mirror.asc"
    assert m.key == armored_key[0].strip() + "\n" and m.suites == ()
    assert m.suites_for("bookworm") == ("bookworm", "bookworm-updates")


def test_without_the_section_there_is_no_mirror_and_no_apt_key(tmp_path: Path) -> None:
    data = json.loads(json.dumps(PLAN))
    del data["cluster"]["distro_mirror"]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_plan(path).cluster.distro_mirror is None
    assert "apt" not in yaml.safe_load(_user_data(path, tmp_path))


@pytest.mark.parametrize(("key", "message"), [
    (None, "cluster.distro_mirror.key_file: cannot be read: No such file or directory (got 'mirror.asc')"),
    ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "must hold one ASCII-armored OpenPGP"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n", "must hold one"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n"
     "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nyy\n-----END PGP PUBLIC KEY BLOCK-----\n", "must hold one"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nk\u00e9y\n-----END PGP PUBLIC KEY BLOCK-----\n", "not ASCII"),
])
def test_bad_key_files_are_refused(tmp_path: Path, key: str | None, message: str) -> None:
    problems = _problems(_plan_file(tmp_path, key))
    assert any(message in p for p in problems), problems


def test_oversized_key_file_is_refused(tmp_path: Path) -> None:
    path = _plan_file(tmp_path, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n" + "A" * (1 << 20) +
                      "\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert any("is larger than 1048576 bytes" in p for p in _problems(path))


def test_url_and_suites_are_checked(tmp_path: Path, armored_key: tuple[str, str]) -> None:
    problems = _problems(_plan_file(tmp_path, armored_key[0], url="ftp://mirror/debian",
                                    suites=["bookworm", "Bookworm Updates", "x$(id)"]))
    assert any(p.startswith("cluster.distro_mirror.url: must be a http/https URL (got 'ftp://mirror/debian')")
               for p in problems), problems
    assert any(p.startswith("cluster.distro_mirror.suites[1]: is not a suite name (got 'Bookworm Updates')")
               for p in problems), problems
    assert any(p.startswith("cluster.distro_mirror.suites[2]") for p in problems), problems
    data = json.loads(json.dumps(PLAN))
    data["cluster"]["distro_mirror"] = {"key_file": "mirror.asc"}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    assert "cluster.distro_mirror.url: is required; add it" in _problems(tmp_path / "plan.yaml")


# -- the rendered user-data ----------------------------------------------------------------------------------------

def test_user_data_carries_cloud_init_apt_config(tmp_path: Path, armored_key: tuple[str, str]) -> None:
    apt = yaml.safe_load(_user_data(_plan_file(tmp_path, armored_key[0]), tmp_path))["apt"]
    assert apt == {"preserve_sources_list": False,
                   "primary": [{"arches": ["default"], "uri": URL}],
                   "security": [{"arches": ["default"], "uri": URL}],
                   "sources_list": "deb $PRIMARY bookworm main\ndeb $PRIMARY bookworm-updates main\n",
                   "sources": {"imagegen-mirror": {"key": armored_key[0].strip() + "\n"}}}


def test_ubuntu_takes_its_components_and_codename(tmp_path: Path) -> None:
    data = json.loads(json.dumps(PLAN))
    data["cluster"]["distro"] = "ubuntu-24.04"
    data["cluster"]["distro_mirror"] = {"url": "http://mirror.example.internal/ubuntu/"}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    apt = yaml.safe_load(_user_data(tmp_path / "plan.yaml", tmp_path))["apt"]
    assert apt["sources_list"] == "deb $PRIMARY noble main universe\ndeb $PRIMARY noble-updates main universe\n"
    assert "sources" not in apt  # no key_file: the image's own keys


@pytest.mark.parametrize("suite", SUITES)
def test_cloud_init_schema_accepts_the_apt_config(suite: str, tmp_path: Path, armored_key: tuple[str, str]) -> None:
    path = tmp_path / "user-data"
    path.write_bytes(_user_data(_plan_file(tmp_path, armored_key[0], suites=["bookworm"]), tmp_path))
    result = _schema(suite, path)
    assert result.returncode == 0 and "Valid" in result.stdout, (result.stdout, result.stderr)
    assert "deprecat" not in (result.stdout + result.stderr).lower(), result.stdout


def test_show_urls_lists_the_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    armored_key: tuple[str, str]) -> None:
    path = _plan_file(tmp_path, armored_key[0])
    first = fetches_by_role(load_plan(path))["roles"][0]["fetches"][0]
    assert first["kind"] == "package-repository" and first["target"] == URL
    assert "bookworm, bookworm-updates; main" in first["purpose"]
    assert main(["show", str(path), "--urls"]) == 0
    out = capsys.readouterr().out
    assert URL in out and "package repositories" not in out


# -- cloud-init 22.4's own apt module over the rendered user-data ---------------------------------------------------

# Runs cc_apt_configure.handle, the module's entry point, with the user-data merged over Debian's own
# /etc/cloud/cloud.cfg (which sets apt.preserve_sources_list: true) and, as an image's cloud.cfg.d, `image_cfg`
# (mergemanydict, as cloud-init's ConfigMerger merges them). Every file it writes or
# deletes by absolute path lands under ROOT (util.write_file, del_file and ensure_dir are wrapped; the module's own
# path constants for apt lists and apt.conf.d are pointed there); processes other than gpg --dearmor and dpkg
# --print-architecture are refused; `cloud` is a stand-in recording the apt-get update cloud-init asks its distro for.
_APT_PROBE = r"""
import json, os, sys, yaml
from cloudinit import subp, util
from cloudinit.config import cc_apt_configure as apt

root = sys.argv[2]
# As cloud-init's ConfigMerger does: the user-data over the image's system config (cloud.cfg.d over cloud.cfg).
system = util.mergemanydict([json.loads(sys.argv[3]), util.read_conf(sys.argv[4])])
cfg = util.mergemanydict([yaml.safe_load(open(sys.argv[1]).read()), system])

def inside(path):
    path = str(path)
    return path if path.startswith(root) else os.path.join(root, path.lstrip("/"))

for name in ("write_file", "del_file", "ensure_dir"):
    real = getattr(util, name)
    setattr(util, name, (lambda real: lambda path, *a, **kw: real(inside(path), *a, **kw))(real))
apt.APT_LISTS = inside(apt.APT_LISTS)
apt.APT_PROXY_FN = inside(apt.APT_PROXY_FN)
apt.APT_CONFIG_FN = inside(apt.APT_CONFIG_FN)

commands = []
real_subp = subp.subp
def guarded(args, *a, **kw):
    commands.append(list(args))
    if list(args)[:2] not in (["gpg", "--dearmor"], ["dpkg", "--print-architecture"], ["lsb_release", "--all"]):
        raise RuntimeError(f"the probe refuses {args}")
    return real_subp(args, *a, **kw)
subp.subp = guarded

class Distro:
    name = "debian"
    updates = 0
    def update_package_sources(self):
        Distro.updates += 1

class Cloud:
    distro = Distro()

apt.handle("apt_configure", cfg, Cloud(), None, [])
files = {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
         for d, _, fs in os.walk(root) for f in fs}
print(json.dumps({"files": files, "commands": commands, "updates": Distro.updates}))
"""


def _run_apt_module(user_data: Path, root: Path, gnupg: Path, image_cfg: dict[str, Any]) -> dict[str, Any]:
    ci = cloud_init_root("bookworm")
    cloud_cfg = ci.parents[3] / "etc" / "cloud" / "cloud.cfg"  # the same Debian package's system config
    if not (ci / "cloudinit" / "config" / "cc_apt_configure.py").is_file() or not cloud_cfg.is_file():
        pytest.fail(f"cloud-init (bookworm) is not unpacked under {ci}: run `make deps`")
    assert yaml.safe_load(cloud_cfg.read_text())["apt"] == {"preserve_sources_list": True}
    gnupg.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ci), "GNUPGHOME": str(gnupg)}
    done = subprocess.run([sys.executable, "-c", _APT_PROBE, str(user_data), str(root), json.dumps(image_cfg),
                           str(cloud_cfg)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_cloud_init_22_4_apt_module_writes_the_plans_sources_and_key(tmp_path: Path,
                                                                     armored_key: tuple[str, str]) -> None:
    gpg = require_tool("gpg")
    user_data = tmp_path / "user-data"
    user_data.write_bytes(_user_data(_plan_file(tmp_path, armored_key[0]), tmp_path))
    root = tmp_path / "root"
    root.mkdir()
    got = _run_apt_module(user_data, root, tmp_path / "gnupg", {})
    assert (root / "etc/apt/sources.list").read_text() == (
        f"deb {URL} bookworm main\ndeb {URL} bookworm-updates main\n")
    keyring = root / "etc/apt/trusted.gpg.d/imagegen-mirror.gpg"
    assert set(got["files"]) == {"etc/apt/sources.list", "etc/apt/trusted.gpg.d/imagegen-mirror.gpg"}
    assert ["gpg", "--dearmor"] in got["commands"] and got["updates"] == 1  # cloud-init's own apt-get update
    # The keyring cloud-init wrote is binary (dearmored) and holds the plan's key.
    assert not keyring.read_bytes().startswith(b"-----BEGIN")
    shown = subprocess.run([gpg, "--with-colons", "--show-keys", str(keyring)], capture_output=True, text=True,
                           check=True, timeout=30, env={**os.environ, "GNUPGHOME": str(tmp_path / "gnupg")}).stdout
    assert f"fpr:::::::::{armored_key[1]}:" in shown


def test_cloud_init_22_4_with_debians_generate_mirrorlists(tmp_path: Path, armored_key: tuple[str, str]) -> None:
    """Debian's own genericcloud image sets apt.generate_mirrorlists in /etc/cloud/cloud.cfg.d/01_debian_cloud.cfg
    (merged under the user-data's apt): cloud-init then writes the URL into /etc/apt/mirrors/*.list, which the
    image's debian.sources reads, and leaves sources.list alone."""
    user_data = tmp_path / "user-data"
    user_data.write_bytes(_user_data(_plan_file(tmp_path, armored_key[0]), tmp_path))
    root = tmp_path / "root"
    root.mkdir()
    got = _run_apt_module(user_data, root, tmp_path / "gnupg", {"apt": {"generate_mirrorlists": True}})
    assert (root / "etc/apt/mirrors/debian.list").read_text() == f"{URL}\n"
    assert (root / "etc/apt/mirrors/debian-security.list").read_text() == f"{URL}\n"
    assert "etc/apt/sources.list" not in got["files"]
    assert (root / "etc/apt/trusted.gpg.d/imagegen-mirror.gpg").is_file()
