"""The plan's JSON Schema (for editors: completion and checks as you type), generated from the parser's own tables.

Keys and required flags come from `plan.key_tables()`, choices from `plan.plan_constants()`, defaults from parsing
a minimal plan (so they are the parser's defaults, not a copy). What a schema cannot say (cross-field rules,
canonical forms, the values' shell-safety checks) stays with `imagegen validate`. `schema/plan.schema.json` is the
committed copy; tests/test_operator_cli.py checks it equals `generate()`.
"""

from __future__ import annotations

import json
from typing import Any

from imagegen import plan as plan_module
from imagegen import values
from imagegen.resources import data_dir

SCHEMA_ID = "https://imagegen.invalid/schema/plan.schema.json"
SCHEMA_FILE = "schema/plan.schema.json"

_STR: dict[str, Any] = {"type": "string", "minLength": 1}
_STRS: dict[str, Any] = {"type": "array", "items": _STR}
_IPV4 = {"type": "string", "pattern": r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|"
                                      r"1[0-9][0-9]|[1-9]?[0-9])){3}$"}
_CIDR = {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"}
_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}
_DURATION = {"type": "string", "pattern": f"^{values.DURATION.pattern}$", "minLength": 2}


def _int(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def _choice(path: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(plan_module.plan_constants()[path])}


# One entry per key of plan.key_tables(): type and description. A test checks both tables hold the same keys.
FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "cluster": ({}, "the cluster: versions, runtime, CNI, networks, node settings"),
    "endpoint": ({}, "how clients reach the API server"),
    "network": ({}, "the nodes' network"),
    "nodes": ({}, "every machine, in boot order; the first control plane runs kubeadm init"),
    "ssh_authorized_keys": (_STRS, "OpenSSH public keys for admin_user (one line of ~/.ssh/id_ed25519.pub each)"),
    "admin_user": (_STR, "the login user, passwordless sudo; not a system account"),
    "registry": ({}, "Harbor registry settings (needed with a node of role registry)"),
    "bundle": ({}, "where nodes find the offline Kubernetes bundle"),
    "bootstrap": ({}, "first-boot deadlines"),
    "cluster.name": (_LABEL, "RFC 1123 label; also names the state directory"),
    "cluster.kubernetes_version": ({"type": "string", "pattern": r"^1\.[0-9]+\.[0-9]+$"},
                                   "MAJOR.MINOR.PATCH, quoted, e.g. '1.34.2' (imagegen init resolves '1.34')"),
    "cluster.container_runtime": (_choice("cluster.container_runtime"), "container runtime"),
    "cluster.cri_dockerd": ({"type": "boolean"}, "required true for docker on Kubernetes >= 1.24"),
    "cluster.cni": (_choice("cluster.cni"), "pod network"),
    "cluster.cni_manifest": (_STR, "URL or absolute path; default: the project's release manifest for the CNI"),
    "cluster.kube_proxy_mode": (_choice("cluster.kube_proxy_mode"), "kube-proxy mode"),
    "cluster.pod_cidr": (_CIDR, "pod network"),
    "cluster.service_cidr": (_CIDR, "service network, /12 to /28"),
    "cluster.dns_domain": (_STR, "cluster DNS domain"),
    "cluster.image_repository": (_STR, "where kubeadm pulls control-plane images (a private mirror goes here)"),
    "cluster.package_repository": (_STR, "Kubernetes apt repository; default: pkgs.k8s.io for the plan's minor"),
    "cluster.distro": (_choice("cluster.distro"), "node distribution (profiles/distros/)"),
    "cluster.timezone": (_STR, "IANA time zone"),
    "cluster.ntp_servers": (_STRS, "systemd-timesyncd servers; empty keeps the distribution's"),
    "cluster.token_ttl": (_DURATION, "bootstrap token lifetime, e.g. 24h"),
    "cluster.certificate_signing_duration": (_DURATION, "controller-manager's cluster-signing-duration"),
    "cluster.skip_addons": ({"type": "array", "items": _choice("cluster.skip_addons")}, "kubeadm addons to skip"),
    "cluster.ignore_preflight_errors": (_STRS, "kubeadm preflight checks to ignore"),
    "cluster.kube_vip_image": (_STR, "kube-vip image (endpoint.mode kube-vip)"),
    "cluster.etcd_image_tag": ({"type": "string"}, "etcd image tag override, e.g. 3.4.13-0"),
    "cluster.sysctl": ({"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
                       "sysctl overrides and additions"),
    "cluster.journald": ({"type": "object", "propertyNames": _choice("cluster.journald"),
                          "additionalProperties": {"type": ["string", "integer", "boolean"]}},
                         "journald.conf [Journal] overrides"),
    "cluster.docker": ({}, "Docker daemon settings (container_runtime docker)"),
    "cluster.registry_mirrors": (_STRS, "mirrors for docker.io (URLs); shorthand for cluster.mirrors.docker.io"),
    "cluster.mirrors": ({}, "container image mirrors per registry host (docker.io, registry.k8s.io, ghcr.io, ...)"),
    "cluster.platform_limits": ({"type": "array", "items": _choice("cluster.platform_limits")},
                                "platforms whose user-data size limit every node must fit; render fails otherwise"),
    "cluster.mirrors.*.endpoints": ({"type": "array", "minItems": 1, "items": _STR},
                                    "mirror URLs, tried in order before the registry itself"),
    "cluster.mirrors.*.ca_file": (_STR, "PEM CA certificate(s) of the mirrors, a file on this machine (relative "
                                        "to the plan), written beside hosts.toml"),
    "cluster.mirrors.*.skip_verify": ({"type": "boolean"}, "do not verify the mirrors' TLS certificates"),
    "cluster.etcd_snapshot_retention": (_int(1, 365), "etcd snapshots kept on each control plane"),
    "cluster.component_args": ({"type": "object", "propertyNames": _choice("cluster.component_args"),
                                "additionalProperties": {"type": "object", "additionalProperties":
                                                         {"type": ["string", "integer"]}}},
                               "extra flags per control-plane component, without the leading --"),
    "cluster.docker.registry_mirrors": (_STRS, "Docker registry mirrors (URLs)"),
    "cluster.docker.insecure_registries": (_STRS, "HOST[:PORT] or CIDR"),
    "cluster.docker.data_root": (_STR, "absolute path"),
    "cluster.docker.log_max_size": ({"type": "string", "pattern": "^[0-9]+[kmg]$"}, "json-file log size"),
    "cluster.docker.log_max_file": (_int(1, 100), "json-file log files kept"),
    "endpoint.mode": (_choice("endpoint.mode"), "load-balancer (needs load-balancer nodes and vip), kube-vip "
                                                "(needs vip) or single"),
    "endpoint.vip": (_IPV4, "the virtual IP of the API endpoint"),
    "endpoint.port": (_int(1, 65535), "API endpoint port"),
    "endpoint.name": (_STR, "API endpoint DNS name; default <cluster>-api, resolved through /etc/hosts"),
    "network.cidr": (_CIDR, "the nodes' network"),
    "network.gateway": (_IPV4, "default gateway"),
    "network.dns": ({"type": "array", "items": _IPV4}, "DNS servers"),
    "network.interface": (_LABEL, "interface name the NIC is renamed to (matched by MAC)"),
    "nodes[].name": (_LABEL, "host name, RFC 1123 label"),
    "nodes[].role": (_choice("nodes[].role"), "what the node does"),
    "nodes[].ip": (_IPV4, "static address inside network.cidr"),
    "nodes[].mac": ({"type": "string", "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"}, "the NIC's MAC address"),
    "nodes[].generation": (_int(1, 1_000_000), "bump only to re-provision the node: part of its cloud-init "
                                               "instance-id"),
    "registry.hostname": (_STR, "registry DNS name"),
    "registry.harbor_version": (_STR, "Harbor version, e.g. v2.11.1"),
    "registry.harbor_installer": (_STR, "offline installer URL or absolute path; default: the GitHub release"),
    "registry.data_volume": (_STR, "absolute path"),
    "registry.use_as_mirror": ({"type": "boolean"}, "containerd pulls docker.io and the image repository through "
                                                    "Harbor proxy-cache projects"),
    "bundle.source": (_choice("bundle.source"), "online, disk or image"),
    "bundle.label": (_STR, "file system label of the bundle disk, at most 16 bytes"),
    "bootstrap.deadline_seconds": (_int(60, 86400), "how long a node's first boot may take"),
    "bootstrap.join_attempts": (_int(1, 50), "kubeadm join attempts"),
}

# Defaults that depend on other fields: documented in the description instead.
_DERIVED = {"cluster.cni_manifest", "cluster.package_repository", "endpoint.name", "registry.harbor_installer"}

_MINIMAL: dict[str, Any] = {
    "cluster": {"name": "defaults", "kubernetes_version": "1.34.0"},
    "endpoint": {"mode": "single"},
    "network": {"cidr": "192.168.10.0/24", "gateway": "192.168.10.1"},
    "nodes": [{"name": "cp-1", "role": "control-plane", "ip": "192.168.10.11", "mac": "52:54:00:00:00:11"}],
    "registry": {"hostname": "registry.example.internal"},
}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, int, bool)):
        return value
    return str(value)


def defaults() -> dict[str, Any]:
    """Every optional field's default as the parser applies it, by path."""
    parsed = plan_module.parse_plan(_MINIMAL, "defaults")
    objects = {"": parsed, "cluster": parsed.cluster, "cluster.docker": parsed.cluster.docker,
               "endpoint": parsed.endpoint, "network": parsed.network, "registry": parsed.registry,
               "bundle": parsed.bundle, "bootstrap": parsed.bootstrap, "nodes[]": parsed.nodes[0]}
    out: dict[str, Any] = {}
    for section, keys in plan_module.key_tables().items():
        for key, required in keys.items():
            path = f"{section}.{key}" if section else key
            if required or path in _DERIVED or section not in objects or path in FIELDS and not FIELDS[path][0]:
                continue
            if path in ("cluster.sysctl", "cluster.journald", "cluster.component_args", "cluster.mirrors"):
                out[path] = {}  # overrides merged over imagegen's defaults (plan.DEFAULT_SYSCTL, DEFAULT_JOURNALD)
            elif path == "network.interface":
                out[path] = parsed.network.interface
            elif getattr(objects[section], key) is not None:
                out[path] = _json_value(getattr(objects[section], key))
    return out


def _object(section: str, found: dict[str, Any]) -> dict[str, Any]:
    keys = plan_module.key_tables()[section]
    props: dict[str, Any] = {}
    for key in keys:
        path = f"{section}.{key}" if section else key
        fragment, description = FIELDS[path]
        child = f"{path}[]" if path == "nodes" else path
        if child in plan_module.key_tables():
            body = _object(child, found)
            if path == "nodes":
                body = {"type": "array", "minItems": 1, "items": body}
        elif f"{path}.*" in plan_module.key_tables():
            body = {"type": "object", "propertyNames": {"type": "string", "minLength": 1},
                    "additionalProperties": _object(f"{path}.*", found)}
        else:
            body = dict(fragment)
        body["description"] = description
        if path in found:
            body["default"] = found[path]
        props[key] = body
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": [k for k, required in keys.items() if required]}


def generate() -> dict[str, Any]:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
              "title": "imagegen cluster plan",
              "description": "Generated by imagegen.planschema from the plan parser's tables; `imagegen validate` "
                             "also checks cross-field rules and value safety."}
    schema.update(_object("", defaults()))
    return schema


def generated_text() -> str:
    return json.dumps(generate(), indent=2) + "\n"


def schema_path() -> str:
    """Where the committed (or installed) schema lies, for `# yaml-language-server: $schema=`."""
    return str(data_dir() / SCHEMA_FILE)
