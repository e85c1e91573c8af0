"""`imagegen show`: the plan as a table a person reads."""

from __future__ import annotations

from imagegen.plan import Plan


def plan_table(plan: Plan) -> str:
    c, e = plan.cluster, plan.endpoint
    lines = [
        f"cluster {c.name}: Kubernetes {c.kubernetes_version} ({c.rules.kubeadm_api_version}), "
        f"{c.container_runtime}, CNI {c.cni}, kube-proxy {c.kube_proxy_mode}, {c.distro}",
        f"endpoint {e.mode}: {e.name} -> {plan.endpoint_address}:{e.port}",
        f"networks: nodes {plan.network.cidr} via {plan.network.gateway}, pods {c.pod_cidr}, "
        f"services {c.service_cidr}",
        "",
    ]
    rows = [("NAME", "ROLE", "IP", "MAC", "KUBERNETES")]
    for n in plan.nodes:
        rows.append((n.name, n.role, str(n.ip), n.mac, str(c.kubernetes_version) if n.is_kubernetes else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)
