"""Where a node pulls images from: containerd's `certs.d/<host>/hosts.toml` entries, Docker's docker.io mirrors,
and, for `imagegen show --urls`, which mirror serves a given image. Pure functions over the plan.

containerd (hosts.toml, read at pull time; https://github.com/containerd/containerd/blob/main/docs/hosts.md):
one directory per upstream registry as images name it (`docker.io`, `ghcr.io`, `registry.example:5000`), with
`server` (the upstream, tried last) and a `[host."URL"]` table per mirror, tried in order. A mirror URL whose path
holds `/v2/` below its root (a Harbor proxy-cache project, `https://harbor/v2/dockerhub`) is the registry API root
itself: `override_path = true`, or containerd would append another `/v2`. A mirror's CA (`cluster.mirrors.*.ca_file`)
is written beside its hosts.toml as `mirror-ca.crt` and named by `ca`; `skip_verify` turns TLS checks off; both
only on https:// endpoints (containerd 1.7 tries HTTPS first on an http:// endpoint with TLS settings, and fails).

Docker mirrors only docker.io (`registry-mirrors` in daemon.json, root URLs only): mirrors of other registries
reach containerd nodes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imagegen.plan import Node, Plan, RegistryMirror

DOCKER_HUB = "docker.io"
CERTS_D = "/etc/containerd/certs.d"
MIRROR_CA_NAME = "mirror-ca.crt"
_UPSTREAM = {DOCKER_HUB: "https://registry-1.docker.io"}
_PULL = ["pull", "resolve"]


def upstream_server(host: str) -> str:
    return _UPSTREAM.get(host, f"https://{host}")


def override_path(url: str) -> bool:
    """True when the URL's path already is the registry API root below a `/v2/` (Harbor's `/v2/<project>`)."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return "v2" in parts and parts[-1] != "v2"


def registry_node(plan: Plan) -> Node | None:
    return plan.registry_node


def harbor_host(plan: Plan) -> str:
    return plan.registry.hostname if plan.registry and registry_node(plan) else ""


def _harbor_proxies(plan: Plan) -> list[tuple[str, str]]:
    """Harbor proxy-cache projects named after their upstream (README): (registry host, project)."""
    if not (harbor_host(plan) and plan.registry and plan.registry.use_as_mirror):
        return []
    return [(DOCKER_HUB, "dockerhub"), (plan.cluster.image_repository.split("/")[0], "k8s")]


def registry_hosts(plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """containerd certs.d entries: (every hosts.toml, the plan's own registries that need the registry CA)."""
    harbor = harbor_host(plan)
    ca_path = f"{CERTS_D}/{harbor}/ca.crt"
    private = [{"host": harbor}] if harbor else []
    hosts: dict[str, dict[str, Any]] = {}

    def entry(host: str) -> dict[str, Any]:
        return hosts.setdefault(host, {"host": host, "server": upstream_server(host), "mirrors": []})

    for host, project in _harbor_proxies(plan):
        entry(host)["mirrors"].append({"url": f"https://{harbor}/v2/{project}", "capabilities": _PULL,
                                       "override_path": True, "ca": ca_path, "skip_verify": False})
    for mirror in plan.cluster.mirrors:
        ca = f"{CERTS_D}/{mirror.host}/{MIRROR_CA_NAME}" if mirror.ca_pem else ""
        for url in mirror.endpoints:
            # TLS settings only on https endpoints: containerd 1.7 tries HTTPS first on an http:// host that has a
            # TLS configuration, and fails there (tests/test_containerd_hosts.py).
            tls = url.startswith("https://")
            entry(mirror.host)["mirrors"].append({"url": url, "capabilities": _PULL, "override_path":
                                                  override_path(url), "ca": ca if tls else "",
                                                  "skip_verify": mirror.skip_verify and tls})
    if harbor:
        entry(harbor)["mirrors"].append({"url": f"https://{harbor}", "capabilities": [*_PULL, "push"],
                                         "override_path": False, "ca": ca_path, "skip_verify": False})
    return [hosts[h] for h in sorted(hosts)], private


def mirror_cas(plan: Plan) -> list[dict[str, str]]:
    """The mirrors' CA files for containerd: {host, pem}."""
    return [{"host": m.host, "pem": m.ca_pem} for m in plan.cluster.mirrors if m.ca_pem]


def docker_mirrors(plan: Plan) -> list[str]:
    """daemon.json `registry-mirrors`: Docker mirrors docker.io only."""
    hub = plan.cluster.mirror_for(DOCKER_HUB)
    return list(plan.cluster.docker.registry_mirrors) or (list(hub.endpoints) if hub else [])


def docker_mirror_tls(plan: Plan) -> tuple[list[dict[str, str]], list[str]]:
    """Docker's side of docker.io's mirror CA and skip_verify: certs.d/<mirror host:port>/ca.crt files, and the
    mirror hosts for `insecure-registries`."""
    hub = plan.cluster.mirror_for(DOCKER_HUB)
    if hub is None or plan.cluster.docker.registry_mirrors:
        return [], []
    netlocs = sorted({urlsplit(u).netloc for u in hub.endpoints})
    cas = [{"host": n, "pem": hub.ca_pem} for n in netlocs] if hub.ca_pem else []
    return cas, (netlocs if hub.skip_verify else [])


@dataclass(frozen=True)
class ImageSource:
    image: str
    registry: str
    mirrors: tuple[str, ...]   # tried in order; then the upstream registry itself


def image_registry(image: str) -> str:
    """The registry an image reference names (Docker's rules: a first part with '.' or ':' or 'localhost')."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def image_source(plan: Plan, image: str) -> ImageSource:
    """Where a node's runtime pulls `image` from, as the rendered configuration says."""
    host = image_registry(image)
    if plan.cluster.container_runtime == "docker":
        mirrors = tuple(docker_mirrors(plan)) if host == DOCKER_HUB else ()
        return ImageSource(image, host, mirrors)
    hosts, _ = registry_hosts(plan)
    found = next((h for h in hosts if h["host"] == host), None)
    return ImageSource(image, host, tuple(m["url"] for m in found["mirrors"]) if found else ())


__all__ = ["RegistryMirror", "ImageSource", "registry_hosts", "mirror_cas", "docker_mirrors", "docker_mirror_tls",
           "image_source", "image_registry", "override_path", "upstream_server", "registry_node", "harbor_host"]
