"""imagegen: a Kubernetes cluster plan in, per-node cloud-init, seed ISOs, node images and bundles out."""

__version__ = "0.1.0"
