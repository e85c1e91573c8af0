"""`imagegen diff` (and `render --dry-run`): what a render would change in an existing output, and why.

Renders in memory and compares with OUT's manifest.json and files; writes nothing to OUT or the state directory.
A state that does not exist yet, or lacks items the plan now needs, is completed in a private temporary copy
(0700, removed afterwards), because new secrets change every file that holds them.
Secret content is never shown: user-data entries with mode 0600, admin.conf and the seed ISOs are compared by
digest only.
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imagegen.plan import Plan
from imagegen.render import Artifact, render_cluster
from imagegen.state import ClusterState, ensure_state, inspect_state

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class NodeChange:
    name: str
    role: str
    status: str  # new | removed | changed | unchanged
    files: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # user-data write_files entries that differ
    instance_id: dict[str, str | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "status": self.status, "files": self.files,
                "entries": self.entries, "instance_id": self.instance_id}


@dataclass
class Diff:
    out: str
    state_note: str
    nodes: list[NodeChange]
    cluster: list[str]
    unified: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.cluster) or any(n.status != "unchanged" for n in self.nodes)

    def as_json(self) -> dict[str, Any]:
        return {"out": self.out, "changed": self.changed, "state": self.state_note, "cluster": self.cluster,
                "nodes": [n.as_json() for n in self.nodes]}


def _state_for_diff(state_dir: Path, plan: Plan, accept_changed_identity: bool) -> tuple[ClusterState, str,
                                                                                          Path | None]:
    found = inspect_state(state_dir, plan, accept_changed_identity=accept_changed_identity)
    if not found.fresh:
        from imagegen.state import _cluster_state  # the verified, complete state, read without a write

        try:
            return _cluster_state(plan, found), f"{state_dir} (read only)", None
        except (KeyError, AssertionError):
            pass
    tmp = Path(tempfile.mkdtemp(prefix="imagegen-diff-"))
    copy = tmp / "state"
    if found.fresh:
        note = f"{state_dir} does not exist yet: a render would make new CAs and a new token"
    else:
        shutil.copytree(state_dir, copy, symlinks=True)
        note = f"{state_dir} lacks items this plan needs: a render would add them"
    state = ensure_state(copy, plan, accept_changed_identity=accept_changed_identity, notify=lambda _m: None)
    return state, note, tmp


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _instance_id(data: bytes | None) -> str | None:
    if data is None:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("instance-id:"):
            return line.split(":", 1)[1].strip()
    return None


def _entries(data: bytes | None) -> dict[str, dict[str, Any]]:
    if data is None:
        return {}
    try:
        doc = yaml.load(data, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return {}
    items = doc.get("write_files", []) if isinstance(doc, dict) else []
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            key = item["path"] + (" (append)" if item.get("append") else "")
            out[key] = item
    return out


def _top_keys(data: bytes | None) -> dict[str, Any]:
    try:
        doc = yaml.load(data, Loader=_SAFE_LOADER) if data is not None else None
    except yaml.YAMLError:
        return {}
    return {k: v for k, v in doc.items() if k != "write_files"} if isinstance(doc, dict) else {}


def _entry_changes(old: bytes | None, new: bytes, unified: list[str], node: str, want_files: bool
                   ) -> list[dict[str, Any]]:
    before, after = _entries(old), _entries(new)
    changes = []
    top_a, top_b = _top_keys(old), _top_keys(new)
    for key in sorted(set(top_a) | set(top_b), key=str):
        if top_a.get(key) != top_b.get(key):
            # Top-level cloud-config keys (users, timezone, runcmd, ...): never secret in imagegen's user-data.
            changes.append({"path": f"cloud-config {key}", "change": "changed", "what": [], "secret": False})
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        secret = "0600" in (str((a or {}).get("permissions")), str((b or {}).get("permissions")))
        kind = "added" if a is None else "removed" if b is None else "changed"
        what = []
        if a is not None and b is not None:
            if a.get("content") != b.get("content"):
                what.append("content")
            if a.get("permissions") != b.get("permissions"):
                what.append(f"mode {a.get('permissions')} -> {b.get('permissions')}")
        changes.append({"path": path, "change": kind, "what": what, "secret": secret})
        if want_files and not secret:
            unified += difflib.unified_diff(
                str((a or {}).get("content", "")).splitlines(keepends=True),
                str((b or {}).get("content", "")).splitlines(keepends=True),
                fromfile=f"a/{node}{path}", tofile=f"b/{node}{path}")
    return changes


def diff_output(plan: Plan, out: Path, state_dir: Path, *, accept_changed_identity: bool = False,
                files: bool = False) -> Diff:
    state, note, tmp = _state_for_diff(state_dir, plan, accept_changed_identity)
    try:
        artifacts = render_cluster(plan, state)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return compare(plan, out, artifacts, note, files)


def compare(plan: Plan, out: Path, artifacts: dict[str, Artifact], note: str, files: bool) -> Diff:
    raw = _read(out / "manifest.json")
    try:
        manifest = json.loads(raw) if raw else {}
    except ValueError:
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    old_nodes = {n["name"]: n for n in manifest.get("nodes", []) if isinstance(n, dict) and "name" in n}
    new_manifest = json.loads(artifacts["manifest.json"].data)
    cluster = []
    if not raw:
        cluster.append(f"{out}/manifest.json does not exist: everything is new")
    for key in ("cluster", "kubernetes_version", "kubeadm_api", "container_runtime", "endpoint", "discovery_hash"):
        if raw and manifest.get(key) != new_manifest.get(key):
            shown = "(CA changed)" if key == "discovery_hash" else f"{manifest.get(key)} -> {new_manifest.get(key)}"
            cluster.append(f"{key}: {shown}")
    if raw and (manifest.get("files") or {}).get("admin.conf") != artifacts["admin.conf"].sha256:
        cluster.append("admin.conf: changed (secret, not shown)")
    unified: list[str] = []
    changes = []
    for node in plan.nodes:
        new_files = {p: a for p, a in artifacts.items()
                     if p.startswith(f"nodes/{node.name}/")
                     or p in (f"seeds/{node.name}.iso", f"seeds/{node.name}-configdrive.iso")}
        old = old_nodes.get(node.name)
        meta_path = f"nodes/{node.name}/meta-data"
        ids = {"old": _instance_id(_read(out / meta_path)) if old else None,
               "new": _instance_id(artifacts[meta_path].data)}
        if old is None:
            changes.append(NodeChange(node.name, node.role, "new", sorted(new_files), [], ids))
            continue
        listed = old.get("files")
        old_files: dict[str, Any] = listed if isinstance(listed, dict) else {}
        changed = sorted(p for p, a in new_files.items() if old_files.get(p) != a.sha256)
        changed += sorted(p for p in old_files if p not in new_files)
        status = "changed" if changed or old.get("role") != node.role else "unchanged"
        entries: list[dict[str, Any]] = []
        ud = f"nodes/{node.name}/user-data"
        if ud in changed:
            entries = _entry_changes(_read(out / ud), artifacts[ud].data, unified, node.name, files)
        if files:
            for name in ("network-config", "meta-data"):
                p = f"nodes/{node.name}/{name}"
                if p in changed:
                    unified += difflib.unified_diff(
                        (_read(out / p) or b"").decode(errors="replace").splitlines(keepends=True),
                        artifacts[p].data.decode().splitlines(keepends=True), fromfile=f"a/{p}", tofile=f"b/{p}")
        changes.append(NodeChange(node.name, node.role, status, changed, entries, ids))
    for name, old in old_nodes.items():
        if name not in {n.name for n in plan.nodes}:
            changes.append(NodeChange(name, str(old.get("role", "?")), "removed",
                                      sorted(old.get("files", {})) if isinstance(old.get("files"), dict) else [],
                                      [], {"old": None, "new": None}))
    return Diff(str(out), note, changes, cluster, unified)


def diff_text(d: Diff) -> str:
    lines = [f"state: {d.state_note}"]
    lines += [f"cluster: {c}" for c in d.cluster]
    for n in d.nodes:
        if n.status == "unchanged":
            lines.append(f"  {n.name:<20} unchanged")
            continue
        head = f"  {n.name:<20} {n.status}"
        ids = n.instance_id
        if n.status == "changed" and ids.get("old") != ids.get("new"):
            head += f"; instance-id {ids.get('old')} -> {ids.get('new')} (cloud-init runs again on a reboot)"
        elif n.status == "new":
            head += f"; instance-id {ids.get('new')}"
        lines.append(head)
        if n.status == "changed":
            lines += [f"      {p}" for p in n.files]
        for e in n.entries:
            detail = ", ".join(e["what"]) if e["what"] else e["change"]
            lines.append(f"        {e['path']}: {detail}{' (secret, not shown)' if e['secret'] else ''}")
    summary = sum(1 for n in d.nodes if n.status != "unchanged")
    lines.append(f"{summary} of {len(d.nodes)} nodes would change" if d.changed else "no changes")
    text = "\n".join(lines)
    return text + ("\n\n" + "".join(d.unified).rstrip("\n") if d.unified else "")
