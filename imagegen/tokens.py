"""Day 2: put the state's bootstrap token into the running cluster, so a node rendered today joins whatever the
cluster's age (the token kubeadm init created expires after `cluster.token_ttl`).

`token_secret` is the Secret kubeadm itself writes for a bootstrap token (kube-system/bootstrap-token-<id>, type
bootstrap.kubernetes.io/token, usages authentication and signing, the kubeadm default-node-token group) with an
expiration `ttl` from now; `apply_token` hands it to `kubectl apply` on stdin with the operator's admin.conf.
The secret travels only on kubectl's stdin: never in argv, a file or the console.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from time import sleep
from typing import Any

import yaml

from imagegen import proc, values
from imagegen.errors import UsageError

NODE_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
def ttl_seconds(ttl: str) -> int:
    if ttl == "0":
        return 0  # kubeadm's "never expires"
    m = values.DURATION.fullmatch(ttl)
    if not m or not ttl:
        raise UsageError(f"token ttl {ttl!r}: write it like 24h, 90m or 0 (never expires)")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return hours * 3600 + minutes * 60 + seconds


def token_secret(token: str, ttl: str, now: dt.datetime) -> dict[str, Any]:
    token_id, token_secret_part = token.split(".", 1)
    data: dict[str, str] = {
        "description": "bootstrap token put into the cluster by imagegen token apply",
        "token-id": token_id,
        "token-secret": token_secret_part,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": NODE_TOKEN_GROUP,
    }
    seconds = ttl_seconds(ttl)
    if seconds:
        expiry = now.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)
        data["expiration"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
            "stringData": data}


TRIES = 4
_TRANSIENT = re.compile(r"Unable to connect to the server|connection refused|TLS handshake timeout|"
                        r"context deadline exceeded|i/o timeout|the server is currently unable|"
                        r"etcdserver: request timed out|EOF$", re.M)


def apply_token(token: str, ttl: str, kubeconfig: Path, kubectl: str = "kubectl",
                now: dt.datetime | None = None) -> str:
    """Create or refresh the token's Secret in the cluster; returns the token id (never the secret)."""
    if not kubeconfig.is_file():
        raise UsageError(f"--kubeconfig {kubeconfig}: not a file; use the admin.conf `imagegen render` wrote")
    manifest = yaml.safe_dump(token_secret(token, ttl, now or dt.datetime.now(dt.UTC)), sort_keys=True)
    for attempt in range(1, TRIES + 1):
        try:
            result = proc.capture([kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", "-"], input_text=manifest,
                                  timeout=120)
        except proc.ProgramNotFound:
            raise UsageError(f"--kubectl {kubectl}: not found; install kubectl or pass its path") from None
        except proc.ProcessTimeout:
            raise RuntimeError("kubectl apply did not answer within 120 s (is the API endpoint reachable?)") from None
        # A busy or restarting API server (a control plane under load, a VIP moving) is worth a few more tries;
        # anything else (RBAC, a bad kubeconfig) is reported at once.
        if result.returncode == 0 or attempt == TRIES or not _TRANSIENT.search(result.stderr or ""):
            break
        sleep(5 * 2 ** (attempt - 1))
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace(token.split(".", 1)[1], "<token-secret>")[-400:]
        raise RuntimeError(f"kubectl apply of the bootstrap token failed: {detail}")
    return token.split(".", 1)[0]
