"""The image build's preload boot (profiles/images/scripts/preload-images.sh.j2): rendering, and its functions run
in sh against a real packed bundle with a stand-in `ctr` on PATH; then the record it writes, read by the node's own
runtime seam (the contract between the image build and install_kubernetes).

The script is PID 1 of a throw-away VM (it powers the machine off through sysrq): these tests never run its `main`,
and point /dev/console and /proc/sysrq-trigger at files before sourcing anything.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.image import build, content
from imagegen.image.build import load_spec
from imagegen.resources import data_dir
from tests.conftest import Rendered, require_tool
from tests.test_bundle_node_install import ETCD_TAGS, PRELOAD_CALL, imports, pack_two_images, sums
from tests.test_bundle_node_install import run as run_node

PAUSE = "k8s.gcr.io/pause:3.2"

# Debian 12's ctr (containerd 1.6.20), importing the bundle's etcd archive, printed exactly this (measured):
#   unpacking k8s.gcr.io/etcd:3.4.13-0 (sha256:66b17eec...)...done
#   unpacking imagegen.local/etcd:3.4.23 (sha256:66b17eec...)...done
# The stand-in prints the same for the archive's RepoTags and keeps what it "imported" in $STORE.
CTR = f"""#!{sys.executable}
import json, os, sys, tarfile
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as fh:
    fh.write("ctr " + " ".join(args) + "\\n")
store = os.environ["STORE"]
if args == ["version"]:
    sys.exit(0)
if args == ["-n", "k8s.io", "images", "ls", "-q"]:
    held = set(open(store).read().split()) if os.path.exists(store) else set()
    held -= set(os.environ.get("CTR_FORGETS", "").split())
    print("\\n".join(sorted(held)))
    sys.exit(0)
if args[:4] == ["-n", "k8s.io", "images", "import"] and len(args) == 7 and args[4:6] == ["--snapshotter", "overlayfs"]:
    if os.environ.get("CTR_FAILS") == os.path.basename(args[6]):
        print("ctr: failed to extract layer: no space left on device", file=sys.stderr)
        sys.exit(1)
    with tarfile.open(args[6]) as tar:
        tags = [t for m in json.load(tar.extractfile("manifest.json")) for t in m.get("RepoTags") or []]
    if os.environ.get("CTR_NAMES_NOTHING"):
        tags = []
    for tag in tags:
        print(f"unpacking {{tag}} (sha256:{{'6' * 64}})...done")
    with open(store, "a") as fh:
        fh.write("".join(t + "\\n" for t in tags))
    sys.exit(0)
print("stand-in ctr: unexpected arguments", args, file=sys.stderr)
sys.exit(2)
"""


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return pack_two_images(tmp_path)


def functions(tmp_path: Path) -> str:
    """The rendered script without its last line (`main`), with the console and sysrq pointed at files."""
    text = content.preload_script()
    body, last = text.rstrip("\n").rsplit("\n", 1)
    assert last == "main", "the script must end with one call of main"
    # A device is not truncated by `>`; the file standing in for the console is appended to.
    for path, stand_in in ((">/dev/console", f">>{tmp_path / 'console'}"),
                           ("/proc/sysrq-trigger", str(tmp_path / "sysrq"))):
        assert path in body
        body = body.replace(path, stand_in)
    assert "/dev/console" not in body
    return body + "\n"


def run_functions(tmp_path: Path, bundle: Path, call: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "ctr").write_text(CTR)
    (bindir / "ctr").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    record = tmp_path / "preloaded-images"
    script = tmp_path / "preload.sh"
    # The script sets its own PATH; the stand-in goes first again.
    script.write_text(functions(tmp_path) + f"export PATH='{bindir}':\"$PATH\"\n"
                      f"BUNDLE='{bundle}'\nRECORD='{record}'\nWORK='{work}'\n{call}\necho DONE\n")
    (tmp_path / "calls").write_text("")
    variables = {"PATH": "/usr/bin:/bin", "CALLS": str(tmp_path / "calls"),
                 "STORE": str(tmp_path / "store"), **env}
    done = subprocess.run(["sh", str(script)], env=variables, capture_output=True, text=True, check=False)
    assert not (tmp_path / "sysrq").exists(), "a test reached the power-off"
    return done, record


def console(tmp_path: Path) -> str:
    path = tmp_path / "console"
    return path.read_text() if path.exists() else ""


def record_rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if not line.startswith("#")]


# --- rendering -------------------------------------------------------------------------------------------------

def test_the_script_names_the_node_side_record_and_bundle() -> None:
    text = content.preload_script()
    assert text.startswith("#!/bin/sh\n")
    assert f"BUNDLE={content.BUNDLE_DIR}\n" in text and f"RECORD={content.PRELOAD_RECORD}\n" in text
    assert f"rm -f {content.PRELOAD_PATH}\n" in text
    assert f'echo "{content.PRELOAD_OK}" >/dev/console' in text
    assert f'echo "{content.PRELOAD_FAILED} step=$step" >/dev/console' in text
    # The node reads the same record and bundle paths (its bundle part).
    node_part = (data_dir() / "cloud-init" / "node" / "bundle.sh.j2").read_text()
    assert f"PRELOAD_RECORD={content.PRELOAD_RECORD}\n" in node_part
    assert f"BAKED_BUNDLE={content.BUNDLE_DIR}\n" in node_part


def test_the_script_starts_containerd_on_the_nodes_storage() -> None:
    text = content.preload_script()
    assert 'root = "/var/lib/containerd"' in text and 'state = "/run/containerd"' in text
    assert "ctr -n k8s.io images import --snapshotter overlayfs" in text
    for needed in ("mount -t tmpfs", "mount -t cgroup2", "modprobe overlay", "sha256sum --strict --quiet -c SHA256SUMS",
                   'kill -TERM "$containerd_pid"', 'wait "$containerd_pid"'):
        assert needed in text, needed


def test_the_nodes_containerd_config_keeps_the_default_root_and_snapshotter() -> None:
    # The preload boot imports into /var/lib/containerd with overlayfs; the node's config.toml must not move either.
    template = (data_dir() / "cloud-init" / "files" / "containerd-config.toml.j2").read_text()
    settings = [ln.strip() for ln in template.splitlines() if not ln.lstrip().startswith("#")]
    assert not [s for s in settings if s.startswith(("root", "state", "snapshotter"))], settings


def test_rendered_preload_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    script = tmp_path / "preload.sh"
    script.write_text(content.preload_script())
    result = subprocess.run([shellcheck, "-s", "sh", "-S", "style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_preload_refuses_values_that_would_need_quoting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "PRELOAD_RECORD", "/opt/it's")
    with pytest.raises(ValueError, match="record_path"):
        content.preload_script()


def test_only_a_spec_with_a_bundle_stages_the_script(tmp_path: Path) -> None:
    plain = load_spec("node")
    assert content.preload_files(plain) == ()
    baked = dataclasses.replace(plain, bundle=tmp_path)
    (staged,) = content.preload_files(baked)
    assert (staged.path, staged.mode, staged.content) == (content.PRELOAD_PATH, 0o755, content.preload_script())


def test_a_plain_image_keeps_its_cache_key(tmp_path: Path) -> None:
    # The preload script enters the recipe (and so the cache key) of bundle builds only.
    key, recipe, files, _ = build._render(load_spec("node"))
    assert not [f for f in files if f.path == content.PRELOAD_PATH]
    assert not [name for name in recipe if content.PRELOAD_PATH in name]


# --- which archives, on the host --------------------------------------------------------------------------------

def test_preload_archives_are_every_listed_archive_once(bundle: Path) -> None:
    assert build.preload_archives(bundle) == ["images/etcd.tar", "images/pause.tar"]


def test_preload_archives_refuse_a_bundle_without_lists(bundle: Path) -> None:
    (bundle / "node" / "images-worker.list").unlink()
    with pytest.raises(build.UsageError, match="images-worker.list"):
        build.preload_archives(bundle)


def test_preload_archives_refuse_a_listed_archive_that_is_missing(bundle: Path) -> None:
    (bundle / "images" / "etcd.tar").unlink()
    with pytest.raises(build.UsageError, match="images/etcd.tar"):
        build.preload_archives(bundle)


# --- the script's functions with a stand-in ctr -----------------------------------------------------------------

def test_import_all_writes_the_record(bundle: Path, tmp_path: Path) -> None:
    done, record = run_functions(tmp_path, bundle, 'import_all\nmv "$RECORD.tmp" "$RECORD"')
    assert done.stdout.strip() == "DONE", done.stdout + done.stderr
    s = sums(bundle)
    assert record_rows(record.read_text()) == [
        [s["images/etcd.tar"], "images/etcd.tar", " ".join(ETCD_TAGS)],
        [s["images/pause.tar"], "images/pause.tar", PAUSE]]
    assert record.read_text().startswith("# Written by the image build")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:2] == [f"ctr -n k8s.io images import --snapshotter overlayfs {bundle}/images/etcd.tar",
                         f"ctr -n k8s.io images import --snapshotter overlayfs {bundle}/images/pause.tar"]
    assert f"imported images/etcd.tar: {' '.join(ETCD_TAGS)}" in console(tmp_path)


def test_a_failed_import_fails(bundle: Path, tmp_path: Path) -> None:
    done, _ = run_functions(tmp_path, bundle, "import_all", CTR_FAILS="pause.tar")
    assert done.returncode != 0 and "DONE" not in done.stdout
    assert "no space left on device" in done.stderr


def test_an_import_that_names_no_image_fails(bundle: Path, tmp_path: Path) -> None:
    done, _ = run_functions(tmp_path, bundle, "import_all", CTR_NAMES_NOTHING="1")
    assert done.returncode != 0 and "DONE" not in done.stdout
    assert "images/etcd.tar: the import named no image" in console(tmp_path)


def test_an_archive_not_in_sha256sums_fails(bundle: Path, tmp_path: Path) -> None:
    path = bundle / "SHA256SUMS"
    path.write_text("".join(ln for ln in path.read_text().splitlines(True) if "images/pause.tar" not in ln))
    done, _ = run_functions(tmp_path, bundle, "import_all")
    assert done.returncode != 0 and "DONE" not in done.stdout
    assert "images/pause.tar: not in SHA256SUMS" in console(tmp_path)


def test_a_reference_containerd_lacks_afterwards_fails(bundle: Path, tmp_path: Path) -> None:
    done, _ = run_functions(tmp_path, bundle, "import_all", CTR_FORGETS="imagegen.local/etcd:3.4.23")
    assert done.returncode != 0 and "DONE" not in done.stdout
    assert "images/etcd.tar: imagegen.local/etcd:3.4.23 not in containerd" in console(tmp_path)


# --- the contract: what the build records is what the node skips ------------------------------------------------

@pytest.mark.parametrize("role,skipped", [("control-plane", ["images/etcd.tar", "images/pause.tar"]),
                                          ("worker", ["images/pause.tar"])])
def test_the_node_skips_what_the_build_recorded(rendered: dict[str, Rendered], bundle: Path, tmp_path: Path,
                                               role: str, skipped: list[str]) -> None:
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    done, record = run_functions(build_dir, bundle, 'import_all\nmv "$RECORD.tmp" "$RECORD"')
    assert done.stdout.strip() == "DONE", done.stdout + done.stderr
    held = " ".join(sorted(set((build_dir / "store").read_text().split())))
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    out, calls = run_node(rendered["ha"], "worker-1", bundle, node_dir, PRELOAD_CALL + 'install_from_bundle "$BUNDLE"',
                          RECORD=str(record), IMAGES=held, NODE_ROLE=role)
    assert out == "DONE", out
    assert imports(calls) == []
    assert [c for c in calls if "preloaded at image build" in c] == [
        f"log: image {rel}: preloaded at image build, not imported" for rel in skipped]


# --- the boot itself, with a stand-in qemu that writes the console the real boot would -----------------------------

FAKE_QEMU = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
with open(os.environ["QEMU_ARGS"], "w") as fh:
    fh.write("\\n".join(args))
serial = args[args.index("-serial") + 1].removeprefix("file:")
with open(serial, "w") as fh:
    fh.write(os.environ["QEMU_CONSOLE"])
"""


@pytest.mark.parametrize("console_text,error", [
    (f"imported images/pause.tar: {PAUSE}\n{content.PRELOAD_OK}\n", None),
    (f"images/pause.tar: not in SHA256SUMS\n{content.PRELOAD_FAILED} step=import:images/pause.tar\n",
     f"image preload boot: {content.PRELOAD_FAILED} step=import:images/pause.tar; the serial console"),
    ("Kernel panic\n", "image preload boot: no completion marker"),
])
def test_the_preload_boot_needs_its_ok_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console_text: str,
                                             error: str | None) -> None:
    from imagegen.image import qemu
    from imagegen.image.proc import BuildError

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / qemu.QEMU).write_text(FAKE_QEMU)
    (bindir / qemu.QEMU).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("QEMU_ARGS", str(tmp_path / "args"))
    monkeypatch.setenv("QEMU_CONSOLE", console_text)
    log = (tmp_path / "build.log").open("w")

    def boot() -> float:
        return qemu.preload_images(tmp_path / "node.raw", kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img",
                                   accel="tcg", serial_log=tmp_path / "console.log", log=log)

    if error is None:
        assert boot() >= 0
    else:
        with pytest.raises(BuildError, match=error):
            boot()
    log.close()
    args = (tmp_path / "args").read_text().splitlines()
    assert args[args.index("-m") + 1] == str(qemu.PRELOAD_MEMORY_MIB)
    assert f"init={content.PRELOAD_PATH}" in args[args.index("-append") + 1]
    assert "--- image preload boot serial console ---" in (tmp_path / "build.log").read_text()
