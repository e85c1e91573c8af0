"""Version pairs as data: which containerd and Calico versions go with which Kubernetes minor.

The table is profiles/compat/version-pairs.yaml (with its upstream references); this module only reads it and says
what a plan pairs wrongly, as (field, value, message, fix) tuples the plan validation reports as warnings.
Survivable pairs (an old containerd, a CNI outside its tested range) warn; they do not stop rendering.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

import yaml

from imagegen.resources import data_dir

if TYPE_CHECKING:  # plan.py may call pair_problems while parsing: no import cycle at run time
    from imagegen.plan import Plan

Warning_ = tuple[str, str, str, str]


@cache
def version_pairs() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((data_dir() / "profiles" / "compat" / "version-pairs.yaml").read_text())
    return data


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def containerd_problem(kube_minor: str, containerd: str) -> str | None:
    """Why `containerd` is not a recommended runtime for Kubernetes `kube_minor` (None if it is)."""
    row = version_pairs()["containerd"]["recommended"].get(kube_minor)
    if row is None:
        return None
    series = ".".join(containerd.split(".")[:2])
    lowest = row.get(series)
    if lowest is None:
        if _parse(series) > max(_parse(s) for s in row):
            return None  # a series newer than the table knows for this minor: not judged
        listed = ", ".join(f"{v}+" for v in row.values())
        return (f"containerd {series} is not recommended for Kubernetes {kube_minor} "
                f"(containerd's RELEASES.md: {listed})")
    if _parse(containerd) < _parse(lowest):
        return (f"containerd {containerd} is older than {lowest}, the lowest {series} recommended for "
                f"Kubernetes {kube_minor}")
    return None


def calico_problem(kube_minor: str, calico: str) -> str | None:
    tested = version_pairs()["calico"]["tested"].get(".".join(calico.split(".")[:2]))
    if tested is None:
        return None
    low, high = (_parse(v) for v in tested)
    if not low <= _parse(kube_minor) <= high:
        return f"Calico v{calico} is tested with Kubernetes {tested[0]} to {tested[1]}, not {kube_minor}"
    return None


_CALICO_IN_URL = re.compile(r"/v(\d+\.\d+(?:\.\d+)?)/")


def pair_problems(kube_minor: str, container_runtime: str, distro: str, cni: str, cni_manifest: str
                  ) -> list[Warning_]:
    """The version pairs of these cluster settings outside the table, as (field, value, message, fix)."""
    out: list[Warning_] = []
    if container_runtime == "containerd":
        shipped = version_pairs()["containerd"]["distro"].get(distro)
        problem = shipped and containerd_problem(kube_minor, shipped)
        if problem:
            out.append(("cluster.distro", distro, f"ships containerd {shipped}: {problem}",
                        "use a distribution (or node image) with a recommended containerd, or an older Kubernetes"))
    if cni == "calico":
        found = _CALICO_IN_URL.search(cni_manifest)
        problem = found and calico_problem(kube_minor, found.group(1))
        if problem:
            out.append(("cluster.cni_manifest", cni_manifest, problem,
                        "set cluster.cni_manifest to a Calico release tested with this Kubernetes minor"))
    return out


def compat_problems(plan: Plan) -> list[Warning_]:
    """Every version pair of a parsed plan outside the table."""
    c = plan.cluster
    minor = f"{c.kubernetes_version.major}.{c.kubernetes_version.minor}"
    return pair_problems(minor, c.container_runtime, c.distro, c.cni, c.cni_manifest)
