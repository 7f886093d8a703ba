# stormservice-controller — developer commands. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=
CLUSTER_DIR ?= $(CURDIR)/.cluster
IMAGE       ?= stormservice-controller:dev

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv and install the package with test and dev extras

.PHONY: controlplane
controlplane: ## build (or reuse from ~/.cache) etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok
	hack/build-controlplane.sh

.PHONY: test
test: install controlplane ## everything: unit tests, then integration and e2e tests on a local control plane
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)
	$(PY) -m pytest tests/integration e2e tests/chaos -q -m 'integration or e2e or chaos' $(PYTEST_ARGS)

# tests/chaos: each fault CHAOS_ITERATIONS times (`make test` runs it once, as a smoke). Controller
# logs stay in .cluster/chaos-tmp (pytest's default temp dirs are shared and rotated).
CHAOS_ITERATIONS ?= 5

.PHONY: chaos
chaos: install controlplane ## chaos suite: every fault CHAOS_ITERATIONS times (default 5) during rollouts, invariants watched; prints a table
	CHAOS_ITERATIONS=$(CHAOS_ITERATIONS) $(PY) -m pytest tests/chaos -q -m chaos --basetemp=$(CLUSTER_DIR)/chaos-tmp $(PYTEST_ARGS)

.PHONY: unit
unit: install ## unit tests only (no cluster)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

.PHONY: verify
verify: install ## ruff (lint + format), mypy --strict, import-linter layering, committed CRDs equal generated ones
	$(VENV)/bin/ruff check apis controller tests e2e hack bench conftest.py
	$(VENV)/bin/ruff format --check apis controller tests e2e hack bench conftest.py
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports
	$(PY) -m apis.crdgen --check

.PHONY: manifests
manifests: install ## regenerate manifests/crds (schema from apis/crdgen + the Kubernetes PodTemplateSpec OpenAPI)
	$(PY) -m apis.crdgen

.PHONY: cluster-up
cluster-up: install controlplane ## start a local control plane (etcd, apiserver, controller-manager, scheduler, kwok + fake nodes)
	$(PY) hack/localcluster.py up --dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## stop the local control plane started by cluster-up
	@if [ -x $(PY) ]; then $(PY) hack/localcluster.py down --dir $(CLUSTER_DIR); else python3 hack/localcluster.py down --dir $(CLUSTER_DIR); fi

.PHONY: cluster-env
cluster-env: ## print `export KUBECONFIG=...` for the local control plane
	@$(PY) hack/localcluster.py env --dir $(CLUSTER_DIR)

.PHONY: run
run: install controlplane ## local cluster + CRDs + controller + samples/prefill-decode.yaml; Ctrl-C cleans up
	hack/run.sh

# The image installs requirements.lock (runtime) and requirements-build.lock (what builds our wheel)
# with --require-hashes. Linux x86_64 and aarch64 resolve alike; `lock` fails if they ever differ.
# Pins are kept unless pyproject asks otherwise; `make lock LOCK_ARGS=--upgrade` takes the newest.
LOCK_ARGS   ?=
UV_COMPILE  := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
               --custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES := $(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

.PHONY: lock
lock: install ## regenerate requirements.lock and requirements-build.lock (hashed pins for the image)
	$(UV_COMPILE) --python-platform x86_64-unknown-linux-gnu pyproject.toml -o requirements.lock
	$(BUILD_REQUIRES) | $(UV_COMPILE) --python-platform x86_64-unknown-linux-gnu - -o requirements-build.lock
	@tmp=$$(mktemp) && cp requirements.lock $$tmp && \
	$(UV_COMPILE) --python-platform aarch64-unknown-linux-gnu pyproject.toml -o $$tmp && \
	{ diff -u requirements.lock $$tmp || { echo "aarch64 resolves differently: lock per platform" >&2; rm -f $$tmp; exit 1; }; } && \
	rm -f $$tmp

.PHONY: lock-check
lock-check: install ## download every locked wheel for linux x86_64 and aarch64 and check its hash (needs PyPI)
	@for arch in x86_64 aarch64; do \
	  dir=$$(mktemp -d) && \
	  $(VENV)/bin/pip download --quiet --no-cache-dir --require-hashes --no-deps --only-binary=:all: \
	    --python-version 3.11 --implementation cp --abi cp311 \
	    --platform manylinux2014_$$arch --platform manylinux_2_28_$$arch \
	    -r requirements.lock -r requirements-build.lock -d $$dir && echo "every locked wheel for $$arch matches its hash"; \
	  status=$$?; rm -rf $$dir; [ $$status -eq 0 ] || exit $$status; \
	done

.PHONY: image
image: ## docker build -t stormservice-controller:dev . (needs Docker; e2e/README.md loads it into kind)
	@docker info >/dev/null 2>&1 || { echo "make image needs Docker: no docker CLI, or no daemon it can reach" >&2; exit 1; }
	docker build -t $(IMAGE) .

.PHONY: bench
bench: install ## speed and memory benchmarks of the runtime hot paths
	$(PY) -m bench --check

.PHONY: bench-scale
bench-scale: install controlplane ## this controller vs kube-controller-manager at 1,000 pods on a local control plane (~15 min; ARGS=--smoke for a tenth)
	$(PY) -m bench.scale $(ARGS)

.PHONY: clean
clean: cluster-down ## stop the cluster and remove the virtualenv
	rm -rf $(VENV) $(CLUSTER_DIR)
