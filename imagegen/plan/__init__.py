"""The cluster plan: typed, frozen objects built once from YAML, with every problem reported at once.

`model` holds the objects, `fields` the one table of plan keys (required, default, check, choices, description)
that drives `parse`, the JSON Schema and the README's plan reference; `checks` the cross-field rules.
"""

from imagegen.plan.checks import SERVICE_CIDR_MAX_PREFIX, SERVICE_CIDR_MIN_PREFIX
from imagegen.plan.fields import FIELDS, Field, key_tables, plan_constants
from imagegen.plan.model import (
    ADDONS,
    BUNDLE_SOURCES,
    CNIS,
    COMPONENTS,
    DEFAULT_JOURNALD,
    DEFAULT_SYSCTL,
    DISTROS,
    ENDPOINT_MODES,
    JOURNALD_KEYS,
    KUBERNETES_ROLES,
    MIRROR_CA_MAX_BYTES,
    PLATFORMS,
    PROXY_MODES,
    ROLES,
    RUNTIMES,
    Bootstrap,
    Bundle,
    BundleSource,
    Cluster,
    Cni,
    ContainerRuntime,
    Distro,
    DockerSettings,
    Endpoint,
    EndpointMode,
    Network,
    Node,
    Plan,
    ProxyMode,
    Registry,
    RegistryMirror,
    Role,
    default_package_repository,
)
from imagegen.plan.parse import load_plan, parse_plan, parse_plan_text

__all__ = [
    "ADDONS", "BUNDLE_SOURCES", "CNIS", "COMPONENTS", "DEFAULT_JOURNALD", "DEFAULT_SYSCTL", "DISTROS",
    "ENDPOINT_MODES", "FIELDS", "JOURNALD_KEYS", "KUBERNETES_ROLES", "MIRROR_CA_MAX_BYTES", "PLATFORMS",
    "PROXY_MODES", "ROLES", "RUNTIMES", "SERVICE_CIDR_MAX_PREFIX", "SERVICE_CIDR_MIN_PREFIX",
    "Bootstrap", "Bundle", "BundleSource", "Cluster", "Cni", "ContainerRuntime", "Distro", "DockerSettings",
    "Endpoint", "EndpointMode", "Field", "Network", "Node", "Plan", "ProxyMode", "Registry", "RegistryMirror", "Role",
    "default_package_repository", "key_tables", "load_plan", "parse_plan", "parse_plan_text", "plan_constants",
]
