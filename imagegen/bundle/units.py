"""systemd units for a kubelet installed from the bundle into /usr/local/bin.

kubeadm drives the kubelet through this contract: it writes /var/lib/kubelet/config.yaml and
/var/lib/kubelet/kubeadm-flags.env (KUBELET_KUBEADM_ARGS), a bootstrap kubeconfig for `join`, and
then restarts kubelet.service. Until kubeadm has run, the kubelet exits (no config yet) and
systemd keeps restarting it, which is expected.
"""

from __future__ import annotations

KUBELET_PATH = "/usr/local/bin/kubelet"

KUBELET_SERVICE = f"""\
[Unit]
Description=kubelet: the Kubernetes node agent (imagegen offline bundle)
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target
# kubeadm restarts the kubelet repeatedly while it bootstraps; never give up on it.
StartLimitIntervalSec=0

[Service]
ExecStart={KUBELET_PATH}
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

_KUBECONFIG_ARGS = (
    "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
)

KUBEADM_DROPIN = f"""\
# kubeadm drop-in for kubelet.service (install as
# /etc/systemd/system/kubelet.service.d/10-kubeadm.conf).
[Service]
Environment="KUBELET_KUBECONFIG_ARGS={_KUBECONFIG_ARGS}"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# Written by `kubeadm init` / `kubeadm join`: sets KUBELET_KUBEADM_ARGS.
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# Operator overrides, last resort: sets KUBELET_EXTRA_ARGS.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart={KUBELET_PATH} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

# Bundle-relative path -> content.
SYSTEMD_UNITS: dict[str, str] = {
    "systemd/kubelet.service": KUBELET_SERVICE,
    "systemd/10-kubeadm.conf": KUBEADM_DROPIN,
}

CRI_DOCKERD_PATH = "/usr/local/bin/cri-dockerd"

# Upstream's packaging/systemd units (Mirantis/cri-dockerd), with the binary where the bundle installs it. The
# pause image is not set here: that is the plan's, in a cri-docker.service drop-in rendered per node.
CRI_DOCKER_SERVICE = f"""\
[Unit]
Description=CRI Interface for Docker Application Container Engine (imagegen offline bundle)
Documentation=https://mirantis.github.io/cri-dockerd/
After=network-online.target firewalld.service docker.service
Wants=network-online.target
Requires=cri-docker.socket
StartLimitBurst=3
StartLimitIntervalSec=60s

[Service]
Type=notify
ExecStart={CRI_DOCKERD_PATH} --container-runtime-endpoint fd://
ExecReload=/bin/kill -s HUP $MAINPID
TimeoutSec=0
RestartSec=2
Restart=always
LimitNOFILE=infinity
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
Delegate=yes
KillMode=process

[Install]
WantedBy=multi-user.target
"""

CRI_DOCKER_SOCKET = """\
[Unit]
Description=CRI Docker Socket for the API (imagegen offline bundle)
PartOf=cri-docker.service

[Socket]
ListenStream=%t/cri-dockerd.sock
SocketMode=0660
SocketUser=root
SocketGroup=docker

[Install]
WantedBy=sockets.target
"""

# Added to the bundle only when it carries bin/cri-dockerd.
CRI_DOCKERD_UNITS: dict[str, str] = {
    "systemd/cri-docker.service": CRI_DOCKER_SERVICE,
    "systemd/cri-docker.socket": CRI_DOCKER_SOCKET,
}
