"""Image spec parsing and the cache key: what changes the key, what does not, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imagegen.errors import UsageError
from imagegen.image.build import bundle_digest, load_spec, read_spec_document, spec_dir
from imagegen.image.spec import (
    ImageFormat,
    Kernel,
    cache_key,
    identity_key,
    parse_formats,
    parse_spec,
)

NODE = read_spec_document(spec_dir() / "node.yaml")


def key_of(data: dict, **kw: object) -> str:
    spec = parse_spec(data, **kw)  # type: ignore[arg-type]
    return cache_key(identity_key(spec, bundle_digest=None), {"customize.sh": "x"})


def test_node_spec_resolves_the_cloud_kernel_and_lb_packages() -> None:
    spec = load_spec("node")
    assert spec.kernel is Kernel.CLOUD
    assert "linux-image-cloud-amd64" in spec.packages
    assert "linux-image-amd64" not in spec.packages
    for pkg in ("docker.io", "containerd", "apparmor", "keepalived", "nginx", "libnginx-mod-stream", "cloud-init"):
        assert pkg in spec.packages
    assert list(spec.packages) == sorted(set(spec.packages))
    assert spec.artefact_name == "node-cloud"


def test_generic_kernel_brings_vmware_tools() -> None:
    spec = load_spec("node", kernel="generic")
    assert "linux-image-amd64" in spec.packages and "open-vm-tools" in spec.packages
    assert "linux-image-cloud-amd64" not in spec.packages
    assert spec.artefact_name == "node-generic"


def test_key_is_stable_and_ignores_package_order_and_formats() -> None:
    shuffled = dict(NODE, packages={k: list(reversed(v)) for k, v in NODE["packages"].items()})
    assert key_of(NODE) == key_of(shuffled)
    assert key_of(NODE) == key_of(NODE, formats=(ImageFormat.OVA,))


@pytest.mark.parametrize("change", [
    {"kernel": "generic"},
    {"disk_size_gib": 9},
    {"packages": {**NODE["packages"], "extra": ["htop"]}},
    {"mirror": "http://mirror.example/debian"},
])
def test_key_changes_with_inputs(change: dict) -> None:
    assert key_of(NODE) != key_of(dict(NODE, **change))


def test_key_changes_with_recipe_text_and_bundle() -> None:
    spec = parse_spec(NODE)
    ident = identity_key(spec, bundle_digest=None)
    assert cache_key(ident, {"a": "1"}) != cache_key(ident, {"a": "2"})
    assert identity_key(spec, bundle_digest="abc") != ident


def test_bundle_digest_follows_content(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubeadm").write_bytes(b"one")
    first = bundle_digest(tmp_path)
    assert bundle_digest(tmp_path) == first
    (tmp_path / "bin" / "kubeadm").write_bytes(b"two")
    assert bundle_digest(tmp_path) != first


@pytest.mark.parametrize(("change", "field"), [
    ({"kernel": "rt"}, "kernel"),
    ({"disk_size_gib": 1}, "disk_size_gib"),
    ({"suite": "trixie"}, "suite"),
    ({"packages": {"x": ["Bad Name"]}}, "packages"),
    ({"packages": {"x": ["curl"]}}, "packages"),  # cloud-init etc. missing
    ({"colour": "blue"}, "colour"),
    ({"kernel_packages": {"cloud": ["curl"]}}, "kernel_packages"),
])
def test_bad_spec_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(UsageError, match=field):
        parse_spec(dict(NODE, **change))


def test_node_spec_bakes_what_the_debian_profiles_install() -> None:
    distro = yaml.safe_load((spec_dir().parent / "distros" / "debian-12.yaml").read_text())
    spec = load_spec("node")
    for group in ("base", "cni-plugins", "containerd", "docker", "etcd-client", "load-balancer"):
        for pkg in distro["packages"][group]:
            assert pkg in spec.packages, (group, pkg)


def test_unknown_distro_group_is_named(tmp_path: Path) -> None:
    spec_file = tmp_path / "x.yaml"
    spec_file.write_text(yaml.safe_dump({**yaml.safe_load((spec_dir() / "node.yaml").read_text()),
                                         "distro_packages": {"distro": "debian-12", "groups": ["nope"]}}))
    with pytest.raises(UsageError, match="'nope'"):
        load_spec(str(spec_file))


def test_formats() -> None:
    assert parse_formats("qcow2,ova,qcow2") == (ImageFormat.QCOW2, ImageFormat.OVA)
    with pytest.raises(UsageError, match="vhd"):
        parse_formats("qcow2,vhd")


def test_unknown_spec_lists_known_ones() -> None:
    with pytest.raises(UsageError, match="node"):
        load_spec("no-such-spec")


def test_missing_bundle_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--bundle"):
        load_spec("node", bundle=tmp_path / "absent")


def test_role_services_are_off_at_boot_and_enabled_by_the_bootstrap() -> None:
    from imagegen.image.content import customize_script

    spec = load_spec("node")
    role_services = {"docker.service", "docker.socket", "containerd.service", "nginx.service", "keepalived.service"}
    never_used = {"apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service"}
    assert set(spec.disabled_services) == role_services | never_used
    script = customize_script(spec)
    assert ('chroot "$root" systemctl disable apt-daily-upgrade.timer apt-daily.timer containerd.service '
            'docker.service docker.socket e2scrub_all.timer e2scrub_reap.service keepalived.service '
            'nginx.service') in script
    assert spec.identity()["disabled_services"] == list(spec.disabled_services)  # part of the cache key


def test_bootstrap_enables_role_services_without_sysv_install() -> None:
    """`systemctl enable` of a unit with an init script runs Debian's Perl update-rc.d and reloads systemd (68 s for
    nginx + keepalived under TCG): the bootstrap adds wants links instead."""
    root = Path(__file__).resolve().parents[1] / "cloud-init"
    assert 'systemctl --no-reload add-wants multi-user.target "$@"' in (root / "node" / "lib.sh.j2").read_text()
    text = "\n".join(p.read_text() for p in sorted([*root.glob("steps/*.sh.j2"), *root.glob("runtime/*.sh.j2")]))
    for unit in ("docker", "containerd", "nginx", "keepalived"):
        assert f"systemctl enable {unit}" not in text and f"systemctl enable --now {unit}" not in text
    assert "enable_units nginx.service keepalived.service" in text


def test_stock_spec_holds_only_what_debians_cloud_image_holds() -> None:
    """profiles/images/stock.yaml stands in for Debian 12's genericcloud image (vm-tests/lab/ serves the rest):
    it builds like the node image but carries none of the packages imagegen's profiles install."""
    distro = yaml.safe_load((spec_dir().parent / "distros" / "debian-12.yaml").read_text())
    spec = load_spec("stock")
    assert spec.artefact_name == "stock-cloud" and "linux-image-cloud-amd64" in spec.packages
    for pkg in ("cloud-init", "openssh-server", "sudo", "curl", "ca-certificates", "gnupg", "netplan.io"):
        assert pkg in spec.packages, pkg
    profile_only = {p for group in ("cni-plugins", "containerd", "docker", "etcd-client", "load-balancer", "registry")
                    for p in distro["packages"][group]} - {"curl", "apparmor"}  # genericcloud has these two
    assert profile_only and not profile_only & set(spec.packages), profile_only & set(spec.packages)
    for pkg in ("ipset", "ipvsadm", "conntrack", "socat", "ebtables", "ethtool"):  # base, not in genericcloud
        assert pkg not in spec.packages, pkg
    assert spec.disabled_services == () and spec.remove_files == ()
    assert load_spec("stock", kernel="generic").packages != spec.packages


def test_images_are_built_under_022_whatever_the_callers_umask(monkeypatch: pytest.MonkeyPatch) -> None:
    """cluster-test runs under umask 077; an image it built had /etc, /usr and /var 0700 (the staged tree is copied
    over the root filesystem with cp -a) and systemd-networkd could not start on it."""
    import os

    from imagegen.image import build

    seen: list[int] = []

    def fake_build(spec: object, **_kw: object) -> str:
        current = os.umask(0)
        os.umask(current)
        seen.append(current)
        return "built"

    monkeypatch.setattr(build, "_build_image", fake_build)
    previous = os.umask(0o077)
    try:
        assert build.build_image(load_spec("node")) == "built"  # type: ignore[comparison-overlap]
        assert os.umask(0o077) == 0o077  # the caller's umask is back
    finally:
        os.umask(previous)
    assert seen == [0o022] == [build.BUILD_UMASK]
