"""Registry mirror credentials (`imagegen mirror-auth`): kept in the state (0600), checked at the edge against the
plan's mirror endpoints, given only to the roles whose profile names the `mirror-auth` secret group (control planes
and workers) inside containerd's config.toml (0600), never printed; a Docker plan is refused. containerd 1.6, 1.7
and 2.x parse the rendered config.toml and show the credentials where their CRI plugin reads them."""

from __future__ import annotations

import io
import stat
import tomllib
from pathlib import Path

import pytest
import yaml

from imagegen import mirrorauth, secretpolicy
from imagegen.cli import main
from imagegen.errors import UsageError
from imagegen.plan import Plan, load_plan
from imagegen.profiles import load_profile
from imagegen.render import render_cluster
from imagegen.state import ensure_state, mirror_auth_list, mirror_auth_set
from tests.conftest import ROOT, Rendered
from tests.test_containerd_config import SUITES, dig, dump, effective

MIRROR = "https://mirror.example.internal:5000"
MIRROR_HOST = "mirror.example.internal:5000"
HARBOR_PROJECT = f"{MIRROR}/v2/hub"    # same host: containerd keys credentials by host[:port]
GHCR_MIRROR = "http://10.0.0.5:5000"
PASSWORD = 'Pa"ss\\w ö$rd-\u00e9#'     # quotes, a backslash, non-ASCII, a shell character
USER = "robot$ci"
CONFIG = "/etc/containerd/config.toml"


def _plan_file(tmp_path: Path, runtime: str = "containerd", name: str = "plan.yaml") -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())
    doc["cluster"]["container_runtime"] = runtime
    if runtime == "docker":
        doc["cluster"]["cri_dockerd"] = True
    # Docker takes root URLs only (a path is refused by the plan's checks).
    hub = [MIRROR] if runtime == "docker" else [MIRROR, HARBOR_PROJECT]
    doc["cluster"]["mirrors"] = {"docker.io": {"endpoints": hub},
                                 "ghcr.io": {"endpoints": [GHCR_MIRROR]}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _cli(monkeypatch: pytest.MonkeyPatch, stdin: str, *argv: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(list(argv))


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    return _plan_file(tmp_path)


@pytest.fixture(scope="module")
def with_auth(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    tmp = tmp_path_factory.mktemp("mirror-auth")
    plan = load_plan(_plan_file(tmp))
    mirror_auth_set(tmp / "state", plan, mirrorauth.credential(MIRROR_HOST, username=USER, password=PASSWORD))
    state = ensure_state(tmp / "state", plan)
    return Rendered(plan, state, render_cluster(plan, state))


def _node_text(r: Rendered, node: str) -> str:
    return r.artifacts[f"nodes/{node}/user-data"].data.decode() + "".join(
        f["content"] for f in r.user_data(node)["write_files"])


# --- the command ------------------------------------------------------------------------------------------------

def test_set_list_remove(plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert _cli(monkeypatch, PASSWORD + "\n", "mirror-auth", "set", str(plan_file), "--state", str(state),
                "--endpoint", MIRROR, "--username", USER, "--password-stdin") == 0
    store = state / mirrorauth.STORE_NAME
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert not [p for p in state.iterdir() if p.name.endswith(".imagegen-tmp")]  # written atomically
    assert mirrorauth.parse_store(store.read_bytes()) == {
        MIRROR_HOST: mirrorauth.Credential(MIRROR_HOST, username=USER, password=PASSWORD)}
    assert _cli(monkeypatch, "", "mirror-auth", "list", str(plan_file), "--state", str(state)) == 0
    assert _cli(monkeypatch, "", "mirror-auth", "list", str(plan_file), "--state", str(state), "-o", "json") == 0
    out = capsys.readouterr()
    assert MIRROR_HOST in out.out and USER in out.out and HARBOR_PROJECT in out.out
    assert PASSWORD not in out.out + out.err and "Pa" not in out.out + out.err
    # The other endpoint on the same host names the same credentials: removing through it removes them.
    assert _cli(monkeypatch, "", "mirror-auth", "remove", str(plan_file), "--state", str(state),
                "--endpoint", HARBOR_PROJECT) == 0
    assert not store.exists()
    assert _cli(monkeypatch, "", "mirror-auth", "remove", str(plan_file), "--state", str(state),
                "--endpoint", MIRROR) == 0
    assert "no credentials stored" in capsys.readouterr().out


def test_identity_token(plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    assert _cli(monkeypatch, "tok.en-123\n", "mirror-auth", "set", str(plan_file), "--state", str(state),
                "--endpoint", GHCR_MIRROR, "--token-stdin") == 0
    plan = load_plan(plan_file)
    assert mirror_auth_list(state, plan) == {"10.0.0.5:5000": mirrorauth.Credential("10.0.0.5:5000",
                                                                                   identity_token="tok.en-123")}
    text = mirrorauth.containerd_auth_toml(ensure_state(state, plan).mirror_auth)
    assert text is not None and tomllib.loads(text)["plugins"][mirrorauth.CRI_V2]["registry"]["configs"] == {
        "10.0.0.5:5000": {"auth": {"identitytoken": "tok.en-123"}}}


@pytest.mark.parametrize(("args", "stdin", "expected"), [
    (["--endpoint", "https://mirror.example.internal", "--username", "u", "--password-stdin"], "pw",
     "--endpoint 'https://mirror.example.internal': is not one of the plan's mirror endpoints"),
    (["--endpoint", MIRROR, "--username", "u:x", "--password-stdin"], "pw", "--username: 'u:x' is not"),
    (["--endpoint", MIRROR, "--username", "u", "--password-stdin"], "", "--password-stdin: is empty"),
    (["--endpoint", MIRROR, "--username", "u", "--password-stdin"], "a\nb\n", "more than one line"),
    (["--endpoint", MIRROR, "--username", "u", "--password-stdin"], "a\tb", "control character"),
    (["--endpoint", MIRROR, "--username", "u"], "pw", "give --username U --password-stdin, or --token-stdin"),
    (["--endpoint", MIRROR, "--username", "u", "--token-stdin"], "t", "not both"),
])
def test_set_refuses_at_the_edge(plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str], args: list[str], stdin: str,
                                 expected: str) -> None:
    state = tmp_path / "state"
    assert _cli(monkeypatch, stdin, "mirror-auth", "set", str(plan_file), "--state", str(state), *args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (state / mirrorauth.STORE_NAME).exists()
    if "not one of" in expected:
        assert "did you mean 'https://mirror.example.internal:5000'" in err and "give one of:" in err


def test_corrupt_store_is_named_without_its_secret(with_auth: Rendered, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_state(state, with_auth.plan)
    (state / mirrorauth.STORE_NAME).write_text('{"format": 1, "hosts": {"m:1": {"username": "a b", '
                                               '"password": "SECRET-xyz"}}}')
    (state / mirrorauth.STORE_NAME).chmod(0o600)
    with pytest.raises(UsageError, match="mirror-auth.json has an invalid entry for m:1") as exc:
        ensure_state(state, with_auth.plan)
    assert "SECRET-xyz" not in str(exc.value)
    assert "SECRET" not in repr(mirrorauth.Credential("m:1", username="u", password="SECRET"))


# --- the secret policy ------------------------------------------------------------------------------------------

def test_policy_names_the_group_for_pulling_roles_only() -> None:
    group = secretpolicy.SecretGroup.MIRROR_AUTH
    assert group in secretpolicy.SECRET_TEMPLATE_GROUPS and group in secretpolicy.TEMPLATE_VALUES
    roles = {role: group.value in load_profile(role).secrets
             for role in ("control-plane", "worker", "load-balancer", "registry")}
    assert roles == {"control-plane": True, "worker": True, "load-balancer": False, "registry": False}


def test_credentials_reach_only_control_planes_and_workers(with_auth: Rendered) -> None:
    r = with_auth
    assert [c.host for c in r.state.mirror_auth] == [MIRROR_HOST]
    escaped = mirrorauth.toml_string(PASSWORD)
    for node in r.plan.nodes:
        text = _node_text(r, node.name)
        pulls = node.role in ("control-plane", "worker")
        assert (escaped in text) == pulls and (USER in text) == pulls, node.name
        for f in r.user_data(node.name)["write_files"]:
            if escaped in f["content"]:
                assert f["path"] == CONFIG and f["permissions"] == "0600", (node.name, f["path"])
        # The seed ISO, guestinfo and config drive carry the user-data: all 0600 like it.
        for path, artifact in r.artifacts.items():
            if node.name in path and USER.encode() in artifact.data:
                assert artifact.mode == 0o600, path
    manifest = r.artifacts["manifest.json"].data.decode()
    assert escaped not in manifest and PASSWORD not in manifest


def test_without_credentials_config_toml_is_unchanged_and_public(tmp_path: Path) -> None:
    plan = load_plan(_plan_file(tmp_path))
    state = ensure_state(tmp_path / "state", plan)
    r = Rendered(plan, state, render_cluster(plan, state))
    f = r.files("worker-1")[CONFIG]
    assert f["permissions"] == "0644" and "registry.configs" not in f["content"] and "auth" not in f["content"]
    assert len([x for x in r.user_data("worker-1")["write_files"] if x["path"] == CONFIG]) == 1


def test_render_is_byte_identical_and_silent(with_auth: Rendered, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    again = render_cluster(with_auth.plan, with_auth.state)
    assert {p: a.data for p, a in again.items()} == {p: a.data for p, a in with_auth.artifacts.items()}
    plan_path = _plan_file(tmp_path)
    state = tmp_path / "state"
    mirror_auth_set(state, load_plan(plan_path), mirrorauth.credential(MIRROR_HOST, username=USER,
                                                                       password=PASSWORD))
    capsys.readouterr()
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        assert main(["render", str(plan_path), "--state", str(state), "--out", str(out)]) == 0
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outs[0] == outs[1]
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err and USER not in printed.out + printed.err


def test_credentials_of_hosts_the_plan_dropped_go_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = _plan_file(tmp_path)
    state = tmp_path / "state"
    mirror_auth_set(state, load_plan(plan_path), mirrorauth.credential(MIRROR_HOST, username=USER,
                                                                       password=PASSWORD))
    doc = yaml.safe_load(plan_path.read_text())
    del doc["cluster"]["mirrors"]["docker.io"]
    plan_path.write_text(yaml.safe_dump(doc))
    plan = load_plan(plan_path)
    assert ensure_state(state, plan).mirror_auth == ()
    capsys.readouterr()
    assert _cli(monkeypatch, "", "mirror-auth", "list", str(plan_path), "--state", str(state)) == 0
    assert "NOT USED: no endpoint of the plan" in capsys.readouterr().out


# --- Docker -----------------------------------------------------------------------------------------------------

def test_docker_plan_with_credentials_for_its_mirror_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    containerd_plan = _plan_file(tmp_path)
    docker_plan = _plan_file(tmp_path, runtime="docker", name="docker.yaml")
    state = tmp_path / "state"
    # Refused when set ...
    assert _cli(monkeypatch, "pw", "mirror-auth", "set", str(docker_plan), "--state", str(state), "--endpoint",
                MIRROR, "--username", "u", "--password-stdin") == 2
    assert "cluster.container_runtime: 'docker' cannot authenticate to registry mirrors" in capsys.readouterr().err
    # ... and at render, when the runtime changed after the credentials were set: nothing is written.
    mirror_auth_set(state, load_plan(containerd_plan), mirrorauth.credential(MIRROR_HOST, username="u",
                                                                             password="pw"))
    out = tmp_path / "out"
    assert main(["render", str(docker_plan), "--state", str(state), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"holds credentials for {MIRROR_HOST}" in err and "container_runtime: containerd" in err
    assert "mirror-auth remove" in err and "pw" not in err.replace("pulls", "")
    assert not out.exists()
    # Credentials of a mirror Docker does not use (ghcr.io: containerd only) are no reason to refuse.
    plan: Plan = load_plan(docker_plan)
    assert mirrorauth.for_plan(plan, {"10.0.0.5:5000": mirrorauth.Credential("10.0.0.5:5000", "u", "p")}) == ()


# --- TOML and containerd's own parser ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ['a"b', "a\\b", "ö€😀", "\x7f\x00\x1f", "tab\tnl\nret\r", "'''", '"""', "${x}"])
def test_toml_string_reads_back_exactly(value: str) -> None:
    assert tomllib.loads(f"k = {mirrorauth.toml_string(value)}\n")["k"] == value
    assert mirrorauth.toml_string(value).isascii()


def _auths(suite: str, eff: dict) -> object:
    table = "io.containerd.cri.v1.images" if suite == "sid" else mirrorauth.CRI_V2
    return dig(eff, "plugins", table, "registry", "configs", MIRROR_HOST, "auth")


@pytest.mark.parametrize("suite", SUITES)
def test_containerd_reads_the_credentials(suite: str, with_auth: Rendered, tmp_path: Path) -> None:
    """`containerd config dump` (1.6, 1.7, 2.x) of the rendered config.toml: every setting imagegen relies on, and
    the credentials under the mirror's host:port where the CRI plugin looks them up."""
    text = with_auth.file("worker-1", CONFIG)
    eff = dump(suite, text, tmp_path)
    assert effective(suite, eff)["config_path"] == "/etc/containerd/certs.d"
    assert effective(suite, eff)["systemd_cgroup"] is True
    auth = _auths(suite, eff)
    assert isinstance(auth, dict) and auth["username"] == USER and auth["password"] == PASSWORD, auth


@pytest.mark.parametrize("suite", ("bookworm", "trixie"))
def test_an_imported_auth_drop_in_would_reset_the_cri_plugin(suite: str, with_auth: Rendered,
                                                             tmp_path: Path) -> None:
    """Why the credentials are in a 0600 config.toml and not in a 0600 drop-in under `imports`: containerd
    1.6/1.7 replace a whole plugin table from an imported file, so the CRI settings of config.toml are lost."""
    main_text = with_auth.file("worker-1", CONFIG)
    auth = main_text[main_text.index("[plugins.\"io.containerd.grpc.v1.cri\".registry.configs"):]
    dropin = tmp_path / "auth.toml"
    dropin.write_text("version = 2\n" + auth)
    public = main_text[:main_text.index("# Mirror credentials")]
    split = public.replace("version = 2\n", f"version = 2\nimports = [\"{dropin}\"]\n", 1)
    eff = dump(suite, split, tmp_path)
    assert _auths(suite, eff) is not None
    assert effective(suite, eff)["config_path"] != "/etc/containerd/certs.d"  # lost: why imagegen does not split
