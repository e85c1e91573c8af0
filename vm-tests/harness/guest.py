"""In-guest checks: what a node's rendered user-data promises, verified on the running node over SSH.

Expectations are read from the same user-data the node booted with (modules-load.d, sysctl.d, daemon.json ...),
so a check fails when the node does not do what imagegen told it to.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from harness.report import Check
from harness.ssh import Ssh


@dataclass(frozen=True)
class Expectations:
    modules: tuple[str, ...]
    sysctls: tuple[tuple[str, str], ...]
    journald_dropins: tuple[str, ...]
    docker_daemon: dict[str, object] | None
    containerd_config: bool


def _file_content(entry: dict[str, object]) -> str:
    raw = str(entry.get("content", ""))
    enc = str(entry.get("encoding", "")).lower()
    if enc in ("b64", "base64"):
        return base64.b64decode(raw).decode()
    if enc in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw)).decode()
    return raw


def written_files(text: str) -> dict[str, str]:
    """The files the user-data's write_files writes, path -> content (decoded)."""
    doc = yaml.safe_load(text) or {}
    return {str(e["path"]): _file_content(e) for e in doc.get("write_files") or [] if isinstance(e, dict)}


def expectations_from_user_data(text: str) -> Expectations:
    modules: list[str] = []
    sysctls: dict[str, str] = {}
    journald: list[str] = []
    docker: dict[str, object] | None = None
    containerd = False
    for path, body in written_files(text).items():
        if path.startswith("/etc/modules-load.d/"):
            modules += [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        elif path.startswith("/etc/sysctl.d/"):
            for ln in body.splitlines():
                ln = ln.strip()
                if ln and not ln.startswith(("#", ";")) and "=" in ln:
                    key, _, value = ln.partition("=")
                    sysctls[key.strip().lstrip("-")] = value.strip()
        elif path.startswith("/etc/systemd/journald.conf.d/"):
            journald.append(path)
        elif path == "/etc/docker/daemon.json":
            docker = json.loads(body)
        elif path == "/etc/containerd/config.toml":
            containerd = True
    return Expectations(tuple(modules), tuple(sorted(sysctls.items())), tuple(journald), docker, containerd)


class Checker:
    """Runs named checks against one node and records them in `checks`."""

    def __init__(self, node: str, ssh: Ssh, checks: list[Check]) -> None:
        self.node = node
        self.ssh = ssh
        self.checks = checks

    def check(self, name: str, fn: Callable[[], tuple[bool, str]], *, expected_failure: bool = False) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # a broken check is a failed check, with the reason, not a crashed run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.checks.append(Check(self.node, name, ok, detail[-2000:], round(time.monotonic() - t0, 1),
                                 expected_failure))
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {self.node}: {name}: {detail.splitlines()[0][:150] if detail else ''}", flush=True)
        return ok

    def sudo(self, command: str, timeout: float = 120) -> tuple[int, str]:
        r = self.ssh.run(f"sudo -n sh -c {shell_quote(command)}", timeout=timeout)
        return r.code, (r.out + r.err).strip()


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def normalise_sysctl(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip())


# --- worker / Kubernetes node checks ---------------------------------------------------------------------------

def check_identity(c: Checker, hostname: str, ip: str, prefix: int) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("hostname; ip -4 -o addr show")
        lines = out.splitlines()
        ok = code == 0 and bool(lines) and lines[0].strip() == hostname and f"{ip}/{prefix}" in out
        return ok, f"hostname={lines[0] if lines else '?'}; {ip}/{prefix} {'present' if ok else 'missing'}"
    c.check("hostname and static address", fn)


def check_modules(c: Checker, modules: tuple[str, ...]) -> None:
    def fn() -> tuple[bool, str]:
        if not modules:
            return False, "the user-data loads no kernel modules (expected the profile's list)"
        script = "; ".join(f"test -d /sys/module/{m} || echo MISSING {m}" for m in modules)
        code, out = c.sudo(script)
        missing = [ln.split()[1] for ln in out.splitlines() if ln.startswith("MISSING ")]
        return code == 0 and not missing, f"{len(modules) - len(missing)}/{len(modules)} loaded" + (
            f"; missing: {', '.join(missing)}" if missing else "")
    c.check("kernel modules of the profile loaded", fn)


def check_sysctls(c: Checker, sysctls: tuple[tuple[str, str], ...]) -> None:
    def fn() -> tuple[bool, str]:
        if not sysctls:
            return False, "the user-data sets no sysctls (expected the profile's list)"
        script = "; ".join(f"echo \"{k}=$(sysctl -n {k} 2>&1)\"" for k, _ in sysctls)
        _code, out = c.sudo(script)
        got = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        wrong = [f"{k}: want {v!r} got {got.get(k)!r}" for k, v in sysctls
                 if normalise_sysctl(got.get(k, "")) != normalise_sysctl(v)]
        return not wrong, f"{len(sysctls) - len(wrong)}/{len(sysctls)} at their value" + (
            "; " + "; ".join(wrong) if wrong else "")
    c.check("sysctls at their values", fn)


def check_swap_off(c: Checker, label: str) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("swapon --show --noheadings; echo ---; systemctl is-enabled swap.target || true")
        active, _, target = out.partition("---")
        ok = code == 0 and not active.strip()
        return ok, f"active swap: {active.strip() or 'none'}; swap.target: {target.strip()}"
    c.check(f"swap off ({label})", fn)


def add_swapfile(c: Checker) -> tuple[bool, str]:
    """Give the node a swap file in /etc/fstab, as an operator's template might, to prove swap stays off."""
    return c.sudo("fallocate -l 64M /swapfile && chmod 600 /swapfile && mkswap /swapfile >/dev/null && "
                  "echo '/swapfile none swap sw 0 0' >> /etc/fstab && echo added")[0] == 0, "swap file in fstab"


def check_journald(c: Checker, dropins: tuple[str, ...]) -> None:
    def fn() -> tuple[bool, str]:
        if not dropins:
            return False, "no journald drop-in in the user-data"
        code, out = c.sudo("systemd-analyze cat-config systemd/journald.conf | grep -E '^# /'; "
                           "journalctl -b -u systemd-journald --no-pager -o cat | grep -E 'System Journal' | tail -1")
        missing = [d for d in dropins if f"# {d}" not in out]
        persistent = "/var/log/journal/" in out
        ok = code == 0 and not missing and persistent
        return ok, (f"drop-ins read: {', '.join(d for d in dropins if d not in missing)}; "
                    f"persistent journal: {persistent}; {out.splitlines()[-1] if out else ''}")
    c.check("journald drop-in in effect", fn)


def check_docker(c: Checker, daemon: dict[str, object]) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("docker info --format '{{json .}}'")
        if code != 0:
            return False, f"docker info failed: {out[-300:]}"
        info = json.loads(out.splitlines()[-1])
        exec_opts = cast("list[str]", daemon.get("exec-opts") or [])
        want_driver = "systemd" if "native.cgroupdriver=systemd" in exec_opts else None
        got = {"CgroupDriver": info.get("CgroupDriver"), "LoggingDriver": info.get("LoggingDriver"),
               "LiveRestoreEnabled": info.get("LiveRestoreEnabled")}
        want = {"CgroupDriver": want_driver or "systemd", "LoggingDriver": daemon.get("log-driver", "json-file"),
                "LiveRestoreEnabled": bool(daemon.get("live-restore", True))}
        return got == want, f"got {got}; want {want}"
    c.check("docker effective settings", fn)


def check_containerd(c: Checker) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("containerd config dump")
        hit = [ln.strip() for ln in out.splitlines() if "SystemdCgroup" in ln]
        return code == 0 and any(h.replace(" ", "") == "SystemdCgroup=true" for h in hit), \
            f"merged config: {hit or 'no SystemdCgroup line'}"
    c.check("containerd merged config has SystemdCgroup", fn)


def crictl_info(c: Checker) -> tuple[dict[str, object], str]:
    """`crictl info` as JSON (containerd's CRI status and its effective CRI config), or {} and the error."""
    code, out = c.sudo("crictl info")
    try:
        return (json.loads(out) if code == 0 else {}), out
    except ValueError:
        return {}, out


def dig(doc: object, *keys: str) -> object:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def check_cri_config(c: Checker, pause_image: str) -> None:
    """What kubelet's runtime really uses, asked through the CRI (crictl reads /etc/crictl.yaml)."""
    def fn() -> tuple[bool, str]:
        info, raw = crictl_info(c)
        systemd = dig(info, "config", "containerd", "runtimes", "runc", "options", "SystemdCgroup")
        sandbox = dig(info, "config", "sandboxImage")
        config_path = dig(info, "config", "registry", "configPath")
        ok = systemd is True and sandbox == pause_image
        detail = (f"crictl info: runc SystemdCgroup={systemd}, sandboxImage={sandbox} (want {pause_image}), "
                  f"registry configPath={config_path}")
        return ok, detail if info else f"crictl info failed: {raw[-300:]}"
    c.check(f"crictl info: SystemdCgroup true, sandbox image {pause_image}", fn)


def check_containerd_mirror(c: Checker, mirrors: list[str]) -> None:
    """The registry mirror is in effect: containerd's effective config points at certs.d, and the docker.io
    hosts.toml there names every mirror of the plan."""
    def fn() -> tuple[bool, str]:
        _, dump = c.sudo("containerd config dump")
        paths = [ln.strip() for ln in dump.splitlines() if ln.strip().startswith("config_path")]
        _, hosts = c.sudo("cat /etc/containerd/certs.d/docker.io/hosts.toml")
        missing = [m for m in mirrors if f'[host."{m}"]' not in hosts]
        ok = 'config_path = "/etc/containerd/certs.d"' in paths and not missing
        return ok, (f"containerd config dump: {paths or 'no config_path'}; docker.io hosts.toml "
                    f"{'names ' + ', '.join(mirrors) if not missing else 'lacks ' + ', '.join(missing)}: "
                    f"{' '.join(hosts.split())[:200]}")
    c.check("registry mirror: containerd config_path /etc/containerd/certs.d and the mirror's hosts.toml", fn)


def check_pod_sandbox_image(c: Checker, label: str, pause_image: str) -> None:
    """A running pod's sandbox (its pause container) was created from the plan's pause image."""
    def fn() -> tuple[bool, str]:
        _, ids = c.sudo(f"crictl pods --label {shell_quote(label)} --state ready -q")
        pod = ids.split()[0] if ids.split() else ""
        if not pod:
            return False, f"no ready pod with label {label}: {ids[:200]}"
        _, raw = c.sudo(f"crictl inspectp {pod}")
        try:
            image = dig(json.loads(raw), "info", "image")
        except ValueError:
            image = None
        source = "crictl inspectp .info.image"
        if not image:  # older CRI plugins do not report it: the sandbox container's own record does
            _, raw = c.sudo(f"ctr -n k8s.io containers info {pod}")
            try:
                image = json.loads(raw).get("Image")
            except ValueError:
                image = None
            source = "ctr containers info .Image"
        if image == pause_image:
            return True, f"pod sandbox {pod[:13]}: {source} = {image}"
        # The runtime may record the image by its ID or digest instead of the tag: accept those of the pause image.
        _, raw = c.sudo(f"crictl inspecti -o json {shell_quote(pause_image)}")
        try:
            status = json.loads(raw).get("status", {})
            names = {status.get("id"), *(status.get("repoDigests") or [])} - {None}
        except ValueError:
            names = set()
        return image in names, (f"pod sandbox {pod[:13]}: {source} = {image}; {pause_image} is "
                                f"{', '.join(sorted(names)) or 'not present'}")
    c.check(f"pod sandbox ({label}) runs the plan's pause image {pause_image}", fn)


def check_kube_packages_held(c: Checker) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("dpkg-query -W -f '${Package}\\n' kubeadm kubelet kubectl 2>/dev/null; echo ---; "
                           "apt-mark showhold")
        installed, _, held = out.partition("---")
        pkgs = [p for p in installed.split() if p]
        if not pkgs:
            return True, "no Kubernetes packages installed (binaries come from the bundle): nothing to hold"
        not_held = [p for p in pkgs if p not in held.split()]
        return not not_held, f"held: {held.split()}; not held: {not_held}"
    c.check("Kubernetes packages on hold (where packages are used)", fn)


def check_cloud_init(c: Checker) -> None:
    def fn() -> tuple[bool, str]:
        code, out = c.sudo("cloud-init status --long; echo \"exit=$?\"; echo ---; "
                           "grep -iE 'schema|Invalid cloud-config|deprecat' /var/log/cloud-init.log | "
                           "grep -iE 'warn|error|invalid' | head -5; echo ---; "
                           "grep -cE ' - [a-z_.]+\\.py\\[(WARNING|ERROR)\\]' /var/log/cloud-init.log || true")
        status, _, rest = out.partition("---")
        schema, _, warns = rest.partition("---")
        done = "status: done" in status and "exit=0" in status
        ok = code == 0 and done and not schema.strip()
        return ok, (f"{' '.join(status.split())[:300]}; schema warnings: {schema.strip() or 'none'}; "
                    f"WARNING/ERROR lines in cloud-init.log: {warns.strip()}")
    c.check("cloud-init finished without errors or schema warnings", fn)


# --- load balancer checks --------------------------------------------------------------------------------------

def listening(c: Checker, port: int) -> tuple[bool, str]:
    code, out = c.sudo(f"ss -ltnpH 'sport = :{port}'")
    return code == 0 and bool(out.strip()), out.strip()[:300] or f"nothing listens on :{port}"


def holds_vip(ssh: Ssh, vip: str) -> bool | None:
    r = ssh.run("ip -4 -o addr show", timeout=15, connect_timeout=5)
    if not r.ok:
        return None
    return f" {vip}/" in r.out


# What every VM suite keeps from a guest; suites add their own (kubelet, docker ...).
BASE_LOGS = {
    "cloud-init.log": "sudo cat /var/log/cloud-init.log",
    "cloud-init-output.log": "sudo cat /var/log/cloud-init-output.log",
    "bootstrap.journal": "sudo journalctl -b --no-pager -u imagegen-bootstrap.service",
    "journal.txt": "sudo journalctl -b --no-pager",
}


def pull_logs(ssh: Ssh, dest: Path, commands: dict[str, str], timeout: float) -> None:
    """Write each command's output (or its exit status and stderr) to dest/<name>. A node SSH cannot reach (exit 255,
    ssh's own failure) is not asked again for every file: the rest say why they are missing. A node without a
    network kept a failed run's teardown waiting minutes, one attempt per file."""
    dest.mkdir(parents=True, exist_ok=True)
    unreachable = ""
    for name, cmd in commands.items():
        if unreachable:
            (dest / name).write_text(f"[not pulled: {unreachable}]")
            continue
        r = ssh.run(cmd, timeout=timeout, connect_timeout=5)
        (dest / name).write_text(r.out + (f"\n[exit {r.code}] {r.err}" if not r.ok else ""))
        if r.code == 255 and not r.out:
            unreachable = f"SSH to {ssh.host} failed: {r.err.strip()}"
