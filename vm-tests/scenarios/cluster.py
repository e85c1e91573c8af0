"""cluster-test's steps in the order they run (check names, deadlines and report keys are in the step modules)."""

from __future__ import annotations

from collections.abc import Callable

from scenarios.cluster_boot import all_ready, node_checks, wait_bootstrap, wait_ssh
from scenarios.cluster_context import ClusterContext
from scenarios.cluster_day2 import (
    day2_add_worker,
    day2_certificates,
    day2_etcd_restore,
    day2_kubelet_rotation,
    day2_remove_worker,
    day2_replace_worker,
)
from scenarios.cluster_faults import (
    control_plane_loss,
    day2_token_apply,
    etcd_snapshot,
    lb_faults,
    start_wrong_token,
    worker_reboot,
    wrong_token_result,
)
from scenarios.cluster_workload import workload

STEPS: tuple[Callable[[ClusterContext], None], ...] = (
    wait_bootstrap, all_ready, wait_ssh, node_checks, workload, lb_faults, worker_reboot, control_plane_loss,
    start_wrong_token, etcd_snapshot, day2_token_apply, wrong_token_result)

# --day2 (make cluster-test-day2): after STEPS, in this order (each builds on the cluster the one before left).
DAY2_STEPS: tuple[Callable[[ClusterContext], None], ...] = (
    day2_add_worker, day2_remove_worker, day2_kubelet_rotation, day2_replace_worker, day2_certificates,
    day2_etcd_restore)
