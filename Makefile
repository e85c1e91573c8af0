# imagegen: `make demo` renders the example plan, `make test` runs the tests. Everything else is opt-in.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out
PLAN   ?= examples/ha.yaml
# make bundle CRICTL=/path/to/crictl: ship that crictl instead of building cri-tools from ../shared/third-party.
CRICTL ?=
# make bundle CRI_TOOLS_SRC=/path/to/cri-tools-1.25.0.tar.gz: where the crictl source is (default: ../shared/third-party).
CRI_TOOLS_SRC ?=
# make bundle CRI_DOCKERD=/path/to/cri-dockerd: also carry cri-dockerd and its units (Docker, Kubernetes >= 1.24).
CRI_DOCKERD ?=

.PHONY: demo test test-chroot lint deps bench golden image bundle vm-deps vm-smoke vm-profile vm-pxe cluster-test cluster-test-docker cluster-test-ha cluster-test-day2 cluster-test-stock clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m imagegen validate $(PLAN)
	$(PY) -m imagegen show $(PLAN)
	$(PY) -m imagegen render $(PLAN) --out $(OUT) --state .state/demo

deps:
	bash tools/install-test-deps.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check imagegen tests vm-tests benchmarks
	$(VENV)/bin/mypy --strict imagegen
	$(VENV)/bin/mypy --config-file vm-tests/mypy.ini vm-tests

test: $(VENV)/.installed deps lint
	$(VENV)/bin/pytest -q

golden: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests/test_golden.py --regenerate

# Opt-in proof that apt keeps imagegen's conffiles: Debian's nginx installed by the node's own pkg_ensure over a
# pre-written nginx.conf in a throwaway mmdebstrap chroot (root and Debian's mirror; ~1.5 min, minbase cached).
test-chroot: $(VENV)/.installed
	IMAGEGEN_CHROOT_TESTS=1 $(VENV)/bin/pytest -q tests/test_node_defects.py -k chroot

bench: $(VENV)/.installed deps
	$(PY) benchmarks/bench_render.py
	$(PY) benchmarks/bench_serve.py

vm-deps: $(VENV)/.installed
	bash tools/install-vm-deps.sh
	$(PY) -m pip install -q -e '.[vm]'

image: vm-deps
	$(PY) -m imagegen image build --spec node

bundle: vm-deps
	$(PY) vm-tests/bundle/build.py $(if $(CRICTL),--crictl $(CRICTL)) \
	  $(if $(CRI_TOOLS_SRC),--cri-tools-source $(CRI_TOOLS_SRC)) $(if $(CRI_DOCKERD),--cri-dockerd $(CRI_DOCKERD))

vm-smoke: image
	$(PY) vm-tests/smoke.py

# Where a node's first-boot CPU goes: one node of a plan alone (default: the smoke plan's first load balancer), per
# systemd unit, per cloud-init module, per bootstrap step. PROFILE_ARGS="--plan vm-tests/plans/cluster.yaml --node
# ct-lb-1 --node ct-cp-1 --bundle ~/.cache/imagegen/bundle/current/bundle.img" profiles a control plane.
vm-profile: image
	$(PY) vm-tests/boot_profile.py $(PROFILE_ARGS)

# One empty-disk VM installed over the network (PXE -> iPXE -> imagegen serve -> installer), then booted from disk.
vm-pxe: image
	$(PY) vm-tests/pxe_test.py

# containerd (Debian's 1.6, crictl from the bundle); cluster-test-docker: the same cluster on Docker (dockershim).
cluster-test: image bundle
	$(PY) vm-tests/cluster_test.py

cluster-test-docker: image bundle
	$(PY) vm-tests/cluster_test.py --docker

cluster-test-ha: image bundle
	$(PY) vm-tests/cluster_test.py --ha

# cluster-test, then day 2 on the same cluster: a worker added after the token expired, removed, the original
# worker replaced, control-plane certificates and admin.conf renewed, an etcd restore drill.
cluster-test-day2: image bundle
	$(PY) vm-tests/cluster_test.py --day2

# cluster-test's cluster on the stock image (no runtime, no load balancer, no Kubernetes) with no bundle disk: packages
# and images from the lab's Debian and Kubernetes repositories and registry (made from the stock image's package
# list and the bundle), the Debian mirror given to the nodes as cluster.distro_mirror; fails on any 404 of the lab.
cluster-test-stock: vm-deps
	$(PY) -m imagegen image build --spec stock
	$(MAKE) bundle
	$(PY) vm-tests/lab/repo.py build
	$(PY) vm-tests/cluster_test.py --stock

clean:
	rm -rf $(OUT) build
