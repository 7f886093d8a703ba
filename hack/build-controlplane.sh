#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok) from the official Go modules pinned in
# hack/controlplane/{k8s,etcd,kwok}/go.mod, into a per-version cache:
#
#   ${XDG_CACHE_HOME:-~/.cache}/stormservice-controller/<versions-tag>/bin
#
# When every binary is already there it does nothing but print the directory.
# Next to the binaries it writes kwok-stages.yaml: kwok run on its own (not via kwokctl) has
# no built-in stages, so this collects the ones kwokctl uses by default (node-initialize,
# node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete) from the kwok module;
# hack/localcluster.py adds our own from hack/controlplane/kwok-extra-stages.yaml (not built in).
# Usage: hack/build-controlplane.sh [--print-bin-dir] [--force]
#   --print-bin-dir  print the bin directory (the tag is computed, nothing is built)
#   --force          rebuild even when the binaries are cached
# The last line on stdout is always the bin directory; progress goes to stderr.
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD_DIR="${HACK_DIR}/controlplane"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINARIES=("${K8S_BINARIES[@]}" etcd kwok)

# Bump when a build flag below changes, so old binaries are not reused.
BUILD_RECIPE=1
# The tag names the versions and hashes the wrapper modules and the recipe, so a
# change to any pin lands in a fresh directory instead of reusing binaries built
# from something else.
tag_hash="$( (cat "${MOD_DIR}"/{k8s,etcd,kwok}/go.{mod,sum}; echo "recipe=${BUILD_RECIPE}") | sha256sum | cut -c1-10)"
TAG="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${tag_hash}"
CACHE_ROOT="${STORMSERVICE_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/stormservice-controller}"
BIN_DIR="${CACHE_ROOT}/${TAG}/bin"

force=0
for arg in "$@"; do
  case "${arg}" in
    --print-bin-dir) echo "${BIN_DIR}"; exit 0 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-controlplane: unknown argument: ${arg}" >&2; exit 2 ;;
  esac
done

log() { printf '[build-controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-controlplane: ERROR: %s\n' "$*" >&2; exit 1; }

KWOK_STAGE_FILES=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)
KWOK_STAGES="${BIN_DIR}/kwok-stages.yaml"

all_binaries_present() {
  local b
  for b in "${ALL_BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}
all_present() { all_binaries_present && [[ -s "${KWOK_STAGES}" ]]; }

if [[ ${force} -eq 0 ]] && all_present; then
  log "cached: all binaries present in ${BIN_DIR}"
  echo "${BIN_DIR}"
  exit 0
fi

# --- prerequisites -----------------------------------------------------------
command -v go >/dev/null 2>&1 \
  || die "the Go toolchain ('go') is not on PATH; install Go >= 1.26.0 (the etcd and kwok modules declare go 1.26.0) and retry"
export GOTOOLCHAIN=local   # never download a toolchain: use the installed Go or fail
go_version="$(go env GOVERSION)"
go_minor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"${go_version}")"
[[ "${go_minor}" =~ ^[0-9]+$ && "${go_minor}" -ge 26 ]] \
  || die "found ${go_version} at $(command -v go); need Go >= 1.26.0 (etcd ${ETCD_VERSION} and kwok ${KWOK_VERSION} declare go 1.26.0)"

mkdir -p "${CACHE_ROOT}/${TAG}"
# One build at a time per tag: pytest and `make run` may both ask for it.
exec 9>"${CACHE_ROOT}/${TAG}/.lock"
if ! flock -n 9; then
  log "another build holds ${CACHE_ROOT}/${TAG}/.lock; waiting for it"
  flock 9
  if [[ ${force} -eq 0 ]] && all_present; then
    log "cached: the other build finished"
    echo "${BIN_DIR}"
    exit 0
  fi
fi

download_modules() {
  local dir="$1"
  if ! (cd "${dir}" && go mod download 2>"${CACHE_ROOT}/${TAG}/download.err"); then
    cat "${CACHE_ROOT}/${TAG}/download.err" >&2
    local proxy
    proxy="$(go env GOPROXY)"
    if [[ "$(go env GOFLAGS)" == *-mod=vendor* ]]; then
      die "GOFLAGS contains -mod=vendor; unset it"
    fi
    die "could not download the Go modules of ${dir#"${HACK_DIR}/"} (they are not all in the module cache $(go env GOMODCACHE)); the Go module proxy GOPROXY=${proxy} is unreachable or refused them. Needed: network access to the module proxy, or a module cache that already holds them."
  fi
}

write_kwok_stages() {
  local dir f tmp
  dir="$(cd "${MOD_DIR}/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  tmp="${KWOK_STAGES}.tmp"
  : >"${tmp}"
  for f in "${KWOK_STAGE_FILES[@]}"; do
    [[ -f "${dir}/kustomize/stage/${f}" ]] || die "kwok ${KWOK_VERSION} has no kustomize/stage/${f}"
    { echo "---"; echo "# from sigs.k8s.io/kwok@${KWOK_VERSION} kustomize/stage/${f}"; cat "${dir}/kustomize/stage/${f}"; } >>"${tmp}"
  done
  mv -f "${tmp}" "${KWOK_STAGES}"
}

if [[ ${force} -eq 0 ]] && all_binaries_present; then
  download_modules "${MOD_DIR}/kwok"
  write_kwok_stages
  log "cached: all binaries present in ${BIN_DIR}; wrote kwok-stages.yaml"
  echo "${BIN_DIR}"
  exit 0
fi

# Runs a build step, logging elapsed time every 30s so a long compile is visibly alive.
build_step() {
  local what="$1" start=${SECONDS} hb rc=0
  shift
  log "building ${what}"
  # Stops by itself if this script dies.
  ( while sleep 30 && kill -0 $$ 2>/dev/null; do log "  still building ${what}: $((SECONDS - start))s"; done ) &
  hb=$!
  "$@" || rc=$?
  kill "${hb}" 2>/dev/null; wait "${hb}" 2>/dev/null || true
  [[ ${rc} -eq 0 ]] || die "building ${what} failed (exit ${rc}); the go output above says why"
  log "built ${what} in $((SECONDS - start))s"
}

# -trimpath and fixed versions make the output independent of where the cache is.
GO_BUILD_FLAGS=(-p "${BUILD_PARALLELISM:-2}" -trimpath -tags selinux,notest)
export CGO_ENABLED=0

staging="${CACHE_ROOT}/${TAG}/bin.partial"
rm -rf "${staging}"
mkdir -p "${staging}" "${BIN_DIR}"
total_start=${SECONDS}

# --- Kubernetes --------------------------------------------------------------
log "downloading Go modules for k8s.io/kubernetes ${K8S_VERSION} (no-op when cached)"
download_modules "${MOD_DIR}/k8s"
build_date="$(cd "${MOD_DIR}/k8s" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/.*"Info": "\(.*\)".*/\1/p' | xargs cat | sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p')"
build_date="${build_date:-1970-01-01T00:00:00Z}"
k8s_minor="$(cut -d. -f2 <<<"${K8S_VERSION}")"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # gitMinor must equal the module's minor or the emulation-version check fails at startup.
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
  # The module proxy does not carry the release commit; say where the source came from.
  ldflags+=" -X ${pkg}.gitCommit=module-proxy-k8s.io/kubernetes@${K8S_VERSION}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done
pkgs=()
for b in "${K8S_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
# One go build for all four, so the packages they share compile once (cold: ~8 min on 2 cores).
build_step "${K8S_BINARIES[*]}" \
  go -C "${MOD_DIR}/k8s" build "${GO_BUILD_FLAGS[@]}" -ldflags "${ldflags}" -o "${staging}/" "${pkgs[@]}"

# --- etcd --------------------------------------------------------------------
log "downloading Go modules for go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
download_modules "${MOD_DIR}/etcd"
build_step etcd go -C "${MOD_DIR}/etcd" build "${GO_BUILD_FLAGS[@]}" \
  -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-proxy-${ETCD_VERSION}" \
  -o "${staging}/etcd" go.etcd.io/etcd/server/v3

# --- kwok --------------------------------------------------------------------
log "downloading Go modules for sigs.k8s.io/kwok ${KWOK_VERSION}"
download_modules "${MOD_DIR}/kwok"
build_step kwok go -C "${MOD_DIR}/kwok" build "${GO_BUILD_FLAGS[@]}" \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
  -o "${staging}/kwok" sigs.k8s.io/kwok/cmd/kwok
write_kwok_stages

# Move into place only when everything built, so a half-finished build is
# never mistaken for a cached one.
for b in "${ALL_BINARIES[@]}"; do
  mv -f "${staging}/${b}" "${BIN_DIR}/${b}"
done
rm -rf "${staging}" "${CACHE_ROOT}/${TAG}/download.err"
log "done in $((SECONDS - total_start))s: ${BIN_DIR}"
"${BIN_DIR}/kube-apiserver" --version >&2
echo "${BIN_DIR}"
