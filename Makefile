# stormservice-controller — developer commands. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
PYTEST_ARGS ?=
CLUSTER_DIR ?= $(CURDIR)/.cluster

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
	$(PY) -m pytest tests/integration e2e -q -m 'integration or e2e' $(PYTEST_ARGS)

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

.PHONY: bench
bench: install ## speed and memory benchmarks of the runtime hot paths
	$(PY) -m bench --check

.PHONY: clean
clean: cluster-down ## stop the cluster and remove the virtualenv
	rm -rf $(VENV) $(CLUSTER_DIR)
