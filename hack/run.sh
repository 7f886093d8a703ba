#!/usr/bin/env bash
# `make run`: a local control plane (reused if one is already running in CLUSTER_DIR), the CRDs,
# the controller in the foreground, and samples/prefill-decode.yaml applied once it is up.
# Ctrl-C stops the controller and, if this script started the cluster, the cluster too
# (KEEP_CLUSTER=1 keeps it). Logs of the cluster: $CLUSTER_DIR/logs.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"
PY="${PY:-${REPO_ROOT}/.venv/bin/python}"
CLUSTER_DIR="${CLUSTER_DIR:-${REPO_ROOT}/.cluster}"
SAMPLE="${SAMPLE:-samples/prefill-decode.yaml}"
METRICS_ADDR="${METRICS_ADDR:-127.0.0.1:8080}"
HEALTH_ADDR="${HEALTH_ADDR:-127.0.0.1:8081}"

started_cluster=0
controller_pid=""

cleanup() {
  trap - EXIT INT TERM
  if [[ -n "${controller_pid}" ]] && kill -0 "${controller_pid}" 2>/dev/null; then
    echo "run: stopping the controller (pid ${controller_pid})" >&2
    kill -TERM "${controller_pid}" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "${controller_pid}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${controller_pid}" 2>/dev/null || true
    wait "${controller_pid}" 2>/dev/null || true
  fi
  if [[ ${started_cluster} -eq 1 && "${KEEP_CLUSTER:-0}" != 1 ]]; then
    "${PY}" hack/localcluster.py down --dir "${CLUSTER_DIR}"
  elif [[ ${started_cluster} -eq 1 ]]; then
    echo "run: cluster left running (KEEP_CLUSTER=1); stop it with: make cluster-down" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if "${PY}" hack/localcluster.py status --dir "${CLUSTER_DIR}" >/dev/null 2>&1; then
  echo "run: reusing the cluster already running in ${CLUSTER_DIR}" >&2
else
  started_cluster=1
  "${PY}" hack/localcluster.py up --dir "${CLUSTER_DIR}" >/dev/null
fi
# KUBECONFIG, and PATH with the built kubectl first.
eval "$("${PY}" hack/localcluster.py env --dir "${CLUSTER_DIR}")"

shopt -s nullglob
crds=(manifests/crds/orchestration.aibrix.ai_*.yaml)
if [[ ${#crds[@]} -gt 0 ]]; then
  kubectl apply --server-side --force-conflicts --field-manager=stormservice-run -k manifests/crds >/dev/null
  # Retried: on a CRD whose status is not written yet, kubectl wait errors instead of waiting.
  for attempt in $(seq 30); do
    kubectl wait --for=condition=Established --timeout=60s "${crds[@]/#/--filename=}" >/dev/null 2>&1 && break
    [[ ${attempt} -lt 30 ]] || { echo "run: CRDs did not become Established" >&2; exit 1; }
    sleep 1
  done
  echo "run: CRDs installed: ${crds[*]}" >&2
else
  echo "run: WARNING: no CRDs in manifests/crds/" >&2
fi

# Keep in step with controller_argv() in tests/integration/conftest.py. setsid: Ctrl-C reaches
# only this script, whose cleanup sends the controller one SIGTERM (a second signal would make
# it skip its graceful shutdown).
setsid "${PY}" -m controller \
  --kubeconfig "${KUBECONFIG}" \
  --leader-elect=false \
  --metrics-bind-address="${METRICS_ADDR}" \
  --health-probe-bind-address="${HEALTH_ADDR}" \
  "$@" &
controller_pid=$!

if [[ -f "${SAMPLE}" ]]; then
  sleep 2
  if kill -0 "${controller_pid}" 2>/dev/null; then
    kubectl apply -f "${SAMPLE}"
  fi
else
  echo "run: no ${SAMPLE}; apply your own manifests with: $("${PY}" hack/localcluster.py env --dir "${CLUSTER_DIR}" | head -1); kubectl apply -f ..." >&2
fi
echo "run: controller running (pid ${controller_pid}); Ctrl-C to stop. In another shell:" >&2
"${PY}" hack/localcluster.py env --dir "${CLUSTER_DIR}" >&2
cat >&2 <<'HINT'
kubectl get storm,rolesets,pods                   # watch it (add -w to follow)
kubectl scale storm/llama-pd --replicas=3         # scale through the scale subresource
HINT
wait "${controller_pid}"
