"""What each Kubernetes version accepts: config API generation, flag names, runtime rules, image tags.

Every version-dependent choice lives here so templates never compare version numbers themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_MINOR = 20
MAX_MINOR = 34
SUPPORTED_RANGE = f"1.{MIN_MINOR}.0 to 1.{MAX_MINOR}.x"

# pause image tag kubeadm of each minor expects (kubeadm's constants.PauseVersion).
_PAUSE = {20: "3.2", 21: "3.4.1", 22: "3.5", 23: "3.6", 24: "3.7", 25: "3.8", 26: "3.9",
          27: "3.9", 28: "3.9", 29: "3.9", 30: "3.9", 31: "3.10", 32: "3.10", 33: "3.10", 34: "3.10.1"}


@dataclass(frozen=True, order=True)
class KubeVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> KubeVersion:
        parts = text.split(".")
        if len(parts) != 3 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
            raise ValueError(text)
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def tag(self) -> str:
        return f"v{self}"

    @property
    def minor_series(self) -> str:
        return f"v{self.major}.{self.minor}"

    def supported(self) -> bool:
        return self.major == 1 and MIN_MINOR <= self.minor <= MAX_MINOR


@dataclass(frozen=True)
class VersionRules:
    """Everything rendering needs to know about one Kubernetes version."""

    version: KubeVersion
    kubeadm_api: str
    extra_args_as_list: bool
    cri_socket_uri_scheme: bool
    has_dockershim: bool
    signing_duration_flag: str
    patches_in_config: bool
    pause_tag: str
    kube_vip_needs_super_admin: bool
    pkgs_k8s_io: bool
    control_plane_join_retry_phases: tuple[str, ...]
    admin_group: str
    drain_emptydir_flag: str

    @property
    def kubeadm_api_version(self) -> str:
        return f"kubeadm.k8s.io/{self.kubeadm_api}"


def rules_for(version: KubeVersion) -> VersionRules:
    minor = version.minor
    if minor <= 21:
        api = "v1beta2"
    elif minor <= 30:
        api = "v1beta3"
    else:
        api = "v1beta4"
    return VersionRules(
        version=version,
        kubeadm_api=api,
        extra_args_as_list=api == "v1beta4",
        # kubeadm >= 1.24 warns on and later rejects a criSocket without the unix:// scheme.
        cri_socket_uri_scheme=minor >= 24,
        # dockershim was removed in 1.24 (KEP-2221).
        has_dockershim=minor < 24,
        # --experimental-cluster-signing-duration was replaced in 1.19 and removed in 1.25.
        signing_duration_flag="cluster-signing-duration" if minor >= 19 else "experimental-cluster-signing-duration",
        # v1beta3 added `patches:` to Init/JoinConfiguration; before that only --experimental-patches.
        patches_in_config=api != "v1beta2",
        pause_tag=_PAUSE.get(minor, "3.10"),
        # 1.29 split super-admin.conf from admin.conf; admin.conf has no rights until after init (kube-vip #684).
        kube_vip_needs_super_admin=minor >= 29,
        # The community repositories at pkgs.k8s.io start at v1.24.
        pkgs_k8s_io=minor >= 24,
        # What a failed control-plane join retries once its etcd member exists (never `kubeadm reset` then).
        # From 1.33 ControlPlaneKubeletLocalMode is on by default: the etcd member is added by its own `etcd-join`
        # phase after kubelet-start, and `control-plane-join all` no longer touches etcd (kubernetes/kubeadm#3262,
        # kubernetes/kubernetes#125582).
        control_plane_join_retry_phases=(("etcd-join", "kubelet-wait-bootstrap", "control-plane-join all")
                                         if minor >= 33 else ("control-plane-join all",)),
        # From 1.29 kubeadm's admin.conf is in group kubeadm:cluster-admins, bound to cluster-admin through RBAC
        # (so it can be revoked); system:masters bypasses RBAC and is kept for super-admin.conf.
        admin_group="kubeadm:cluster-admins" if minor >= 29 else "system:masters",
        # kubectl drain's flag for pods with emptyDir volumes: --delete-emptydir-data arrived in kubectl 1.20
        # (kubernetes/kubernetes#95076) and --delete-local-data was later removed. A 1.20 cluster may be driven by
        # kubectl 1.19 (the supported skew), which knows only the old flag; 1.21's kubectl still accepts it.
        drain_emptydir_flag="--delete-emptydir-data" if minor >= 21 else "--delete-local-data",
    )


def cri_tools_series(version: KubeVersion) -> str:
    return f"{version.major}.{version.minor}.*"
