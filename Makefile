# cloudlet: every target builds its own virtualenv; nothing to install by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_STATE ?= $(CURDIR)/.demo-state

.PHONY: all venv system-deps dataplane-deps vcsim openstack-cloud demo-local demo-openstack demo-etcd lint typecheck layers unit test demo bench soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# What the demos need and nothing more: cloudlet and its run-time libraries,
# no test or lint tools (`make test` and the rest install the dev extra).
RUN_STAMP := $(VENV)/.runtime-stamp
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

# Graphviz draws `cloudlet graph -o x.svg`; the tests draw one. systemd-analyze verifies the
# contrib/ unit (offline: no running systemd needed).
# cloud-init's `schema` checks `cloudlet export onboard`'s user data. Installing it must not change
# this host: services stay stopped (policy-rc.d, as dataplane-deps), /etc/cloud/cloud-init.disabled
# keeps it from ever running at a boot, and its login-shell locale check (profile.d) is left out.
system-deps:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (for cloudlet graph -o *.svg)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	  || echo "warning: could not install graphviz; SVG/PNG graph tests will fail"; }
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (its systemd-analyze checks contrib/cloudlet-reconcile.service offline)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null) \
	  || echo "warning: could not install systemd; the unit file tests will fail"; }
	@command -v zsh >/dev/null 2>&1 || { \
	  echo "installing zsh (the tests load cloudlet completion zsh in a real zsh)"; \
	  (apt-get -o DPkg::Lock::Timeout=900 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends zsh >/dev/null) \
	  || echo "warning: could not install zsh; the zsh completion test will be skipped"; }
	@command -v cloud-init >/dev/null 2>&1 || { \
	  echo "installing cloud-init (its schema check validates cloudlet export onboard's user data)"; \
	  ours=0; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1; fi; \
	  mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled; \
	  (apt-get -o DPkg::Lock::Timeout=900 update -qq \
	   && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
	     --no-install-recommends -o 'DPkg::Options::=--path-exclude=/etc/profile.d/Z99-cloud-locale-test.sh' cloud-init >/dev/null) \
	  || echo "warning: could not install cloud-init; the onboarding user-data tests will fail"; \
	  if [ $$ours = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }

# The `local` platform's data plane (issue 10): haproxy (TCP), nginx stream (UDP), keepalived (VRRP),
# nftables, iproute2, conntrack, arping, socat, curl. Packaged services must never start: every daemon
# runs in the foreground inside its namespace. Debian's policy-rc.d (exit 101) stops the maintainer
# scripts from starting them; if the machine has none, one is put there for this install and removed.
DATAPLANE_CMDS := haproxy keepalived nginx nft ip conntrack arping socat curl
NGINX_STREAM   := /usr/lib/nginx/modules/ngx_stream_module.so
dataplane-deps:
	@missing=""; for c in $(DATAPLANE_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	[ -e $(NGINX_STREAM) ] || missing="$$missing ngx_stream_module"; \
	if [ -n "$$missing" ]; then \
	  echo "installing the local data plane (missing:$$missing)"; \
	  ours=0; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1; fi; \
	  apt-get -o DPkg::Lock::Timeout=900 update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends \
	    haproxy keepalived nginx libnginx-mod-stream nftables iproute2 conntrack iputils-arping socat curl >/dev/null; \
	  rc=$$?; if [ $$ours = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi

# govmomi's vCenter simulator, built offline from Debian's Go packages into
# .cache/vcsim/ (the vSphere tests start it on a free loopback port).
GOVMOMI_SIM := /usr/share/gocode/src/github.com/vmware/govmomi/simulator
vcsim:
	@{ command -v go >/dev/null 2>&1 && [ -d $(GOVMOMI_SIM) ]; } || { \
	  echo "installing golang-go and golang-github-vmware-govmomi-dev (for vcsim)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    golang-go golang-github-vmware-govmomi-dev >/dev/null; }
	sh tests/vcsim/build.sh

# A real OpenStack control plane (Debian's Zed packages: keystone, glance, placement, nova with the fake
# driver, agent-less neutron, heat) on 127.0.0.1, for the OpenStack tests; root. Idempotent: returns at
# once when the cloud of OSCI_DIR (default /var/tmp/cloudlet-osci) is already up and healthy.
openstack-cloud:
	bash tests/integration/openstack/cloud.sh up

lint: $(STAMP)
	$(BIN)/ruff check cloudlet tests bench scripts
	$(BIN)/ruff format --check cloudlet tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy cloudlet

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

test: $(STAMP) system-deps dataplane-deps vcsim openstack-cloud lint typecheck layers
	$(BIN)/pytest tests -p no:cacheprovider

demo-etcd: $(STAMP)
	$(BIN)/python scripts/demo_etcd.py

demo: $(RUN_STAMP)
	DEMO_STATE=$(DEMO_STATE) CLOUDLET=$(BIN)/cloudlet bash scripts/demo.sh

demo-local: $(RUN_STAMP) dataplane-deps
	$(BIN)/python scripts/demo_local.py

demo-openstack: $(RUN_STAMP)
	DEMO_STATE=$(DEMO_STATE)-openstack CLOUDLET=$(BIN)/cloudlet PYTHON_BIN=$(BIN)/python \
	  bash scripts/demo_openstack.sh

# The hypothesis suites with 20x the examples CI runs (about 11 min): for
# finding the rare counterexample before CI does. SCALE=N to choose.
soak: $(STAMP) system-deps vcsim
	CLOUDLET_HYPOTHESIS_SCALE=$(or $(SCALE),20) $(BIN)/pytest -q -p no:cacheprovider \
		tests/property tests/integration/test_vsphere_e2e.py -k "not without_credentials"

bench: $(STAMP) vcsim dataplane-deps
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/daemon.py
	$(BIN)/python bench/daemon_etcd.py
	$(BIN)/python bench/vsphere.py
	$(BIN)/python bench/os_vs_heat.py
	$(BIN)/python bench/local.py

clean:
	rm -rf $(VENV) $(DEMO_STATE) $(DEMO_STATE)-openstack .mypy_cache .ruff_cache .pytest_cache .hypothesis
