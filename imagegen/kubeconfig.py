"""The operator's admin kubeconfig, signed by the cluster CA ahead of boot."""

from __future__ import annotations

import base64

import yaml

from imagegen.plan import Plan
from imagegen.state import ClusterState


def admin_kubeconfig(plan: Plan, state: ClusterState) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    name = plan.cluster.name
    user = f"{name}-admin"
    # The address, not the name: the operator's machine need not resolve the endpoint name; it is a SAN.
    server = f"https://{plan.endpoint_address}:{plan.endpoint.port}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server,
                                                 "certificate-authority-data": b64(state.ca.cert_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(state.admin.cert_pem),
                                          "client-key-data": b64(state.admin.key_pem)}}],
        "contexts": [{"name": f"{user}@{name}", "context": {"cluster": name, "user": user}}],
        "current-context": f"{user}@{name}",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()
