"""A workload from the bundle (or, with no bundle, pulled through the lab registry) on the worker, its ClusterIP
Service from the control plane, kube-proxy in ipvs mode."""

from __future__ import annotations

import ipaddress
import time
from functools import partial

from harness import guest

from scenarios.cluster_context import BUSYBOX, DEADLINES, ClusterContext


def workload_manifest(worker: str, pull_policy: str = "Never") -> str:
    """busybox httpd from the bundle's image (pull_policy Never) or pulled through the registry mirror
    (IfNotPresent), pinned to the worker, behind a ClusterIP Service on port 80."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: ct-web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: ct-web}}}}
  template:
    metadata: {{labels: {{app: ct-web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {worker}}}
      containers:
        - name: web
          image: {BUSYBOX}
          imagePullPolicy: {pull_policy}
          command: [sh, -c, "mkdir -p /www && echo imagegen-cluster-test > /www/index.html &&
            exec httpd -f -p 8080 -h /www"]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 3}}
---
apiVersion: v1
kind: Service
metadata: {{name: ct-web, namespace: default}}
spec:
  type: ClusterIP
  selector: {{app: ct-web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def service_answers(cpc: guest.Checker, cp_name: str, cluster_ip: str, pod_info: str) -> tuple[bool, str]:
    if not cluster_ip:
        return False, f"no ClusterIP to probe ({pod_info[-200:]})"
    deadline = time.monotonic() + DEADLINES["service"]
    while True:
        rc, o = cpc.sudo(f"curl -s --max-time 5 http://{cluster_ip}/")
        if "imagegen-cluster-test" in o or time.monotonic() > deadline:
            return "imagegen-cluster-test" in o, f"ClusterIP {cluster_ip} from {cp_name}: exit {rc}: {o[:200]}"
        time.sleep(3)


def ipvs(c: guest.Checker, cluster_ip: str) -> tuple[bool, str]:
    if not cluster_ip:
        return False, "no ClusterIP to look for"
    deadline = time.monotonic() + 60
    while True:
        _, o = c.sudo("ipvsadm -Ln")
        lines = o.splitlines()
        at = [i for i, ln in enumerate(lines) if f"{cluster_ip}:80" in ln]
        # The virtual service and, under it, a real server (the pod's IP on port 8080).
        ok = bool(at) and any(":8080" in ln for ln in lines[at[0] + 1:at[0] + 3])
        if ok or time.monotonic() > deadline:
            return ok, " | ".join(lines[at[0]:at[0] + 2]) if at else o[-300:]
        time.sleep(5)


def workload(ctx: ClusterContext) -> None:
    kubectl = ctx.kubectl
    with ctx.session.phase("workload"):
        t = time.monotonic()
        worker, cp = ctx.workers[0], ctx.cps[0]
        manifest = workload_manifest(worker.name, ctx.pull_policy)
        (ctx.run_dir / "workload.yaml").write_text(manifest)
        # apply is idempotent: retried while the API server behind the VIP is too busy (a stock run lost the whole
        # workload to one "context deadline exceeded" here).
        code, applied = kubectl.retry("apply", "-f", "-", stdin=manifest)
        cluster_ip = ""
        pod_info = applied
        if code == 0:
            while time.monotonic() - t < DEADLINES["workload"]:
                c2, o = kubectl.run("get", "pods", "-l", "app=ct-web", "-o",
                                    "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} "
                                    "{.status.containerStatuses[0].ready}{end}")
                pod_info = o
                if c2 == 0 and o.strip() == f"{worker.name} Running true":
                    break
                time.sleep(5)
            rc, got = kubectl.retry("get", "svc", "ct-web", "-o", "jsonpath={.spec.clusterIP}", accept=is_ip)
            cluster_ip = got.strip() if rc == 0 else ""
            if not cluster_ip:
                pod_info += f"; no ClusterIP from kubectl: {got[:200]}"
        ctx.rec.check(worker.name, f"busybox workload ({BUSYBOX}, imagePullPolicy {ctx.pull_policy}) Running on the "
                                   "worker",
                      lambda: (pod_info.strip() == f"{worker.name} Running true",
                               f"apply: {applied[:200]}; pod: {pod_info}"))
        cpc = ctx.checker(cp)
        cpc.check("ClusterIP Service answers from the control plane",
                  partial(service_answers, cpc, cp.name, cluster_ip, pod_info))
        for n in (cp, worker):
            c = ctx.checker(n)
            c.check("kube-proxy in ipvs mode (ipvsadm -Ln shows the ClusterIP and the pod behind it)",
                    partial(ipvs, c, cluster_ip))
        if ctx.runtime == "containerd":
            guest.check_pod_sandbox_image(ctx.checker(worker), "app=ct-web", ctx.pause_image)
