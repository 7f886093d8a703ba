#!/usr/bin/env bash
# Regenerates apis/openapi/podtemplatespec-v<minor>.json: the PodTemplateSpec schema that every
# role template in our CRDs embeds, taken from Kubernetes' own published OpenAPI v3 document
# (api/openapi-spec/v3/api__v1_openapi.json in the k8s.io/kubernetes module), not written by hand;
# and apis/openapi/podspec-fields-v<minor>.json: which pod spec fields are Go pointers, read from
# the Go types of k8s.io/api and k8s.io/apimachinery (apis/crdgen/gofields.py says why).
#
# Only module zips are downloaded (through the Go module proxy, into the module cache); nothing
# is built. The conversion to a CRD-compatible structural schema is
# apis/crdgen/openapi.py. Afterwards run `python -m apis.crdgen` to regenerate the CRDs.
#
# Usage: hack/update-openapi.sh [k8s version, default v1.34.4]
set -euo pipefail

K8S_VERSION="${1:-v1.34.4}"
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-${ROOT_DIR}/.venv/bin/python}"
minor="$(echo "${K8S_VERSION#v}" | cut -d. -f1,2)"
OUT="${ROOT_DIR}/apis/openapi/podtemplatespec-v${minor}.json"
FIELDS_OUT="${ROOT_DIR}/apis/openapi/podspec-fields-v${minor}.json"
# The staging modules carry the same version as k8s.io/kubernetes, with v0 for v1.
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

# Outside any module, so the download does not touch a go.mod; -json prints the extracted Dir.
workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT
module_dir() {
  (cd "${workdir}" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "$1") \
    | "${PY}" -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d["Dir"])'
}
dir="$(module_dir "k8s.io/kubernetes@${K8S_VERSION}")"
api_dir="$(module_dir "k8s.io/api@${STAGING_VERSION}")"
apimachinery_dir="$(module_dir "k8s.io/apimachinery@${STAGING_VERSION}")"

spec="${dir}/api/openapi-spec/v3/api__v1_openapi.json"
[[ -f "${spec}" ]] || { echo "update-openapi: ${spec} not found" >&2; exit 1; }

cd "${ROOT_DIR}"
"${PY}" -m apis.crdgen.openapi "${spec}" "${OUT}" --source "k8s.io/kubernetes@${K8S_VERSION}:api/openapi-spec/v3/api__v1_openapi.json"
"${PY}" -m apis.crdgen.gofields "${api_dir}/core/v1/types.go" "${apimachinery_dir}/pkg/apis/meta/v1/types.go" \
  "${FIELDS_OUT}" --source "k8s.io/api@${STAGING_VERSION}:core/v1/types.go, k8s.io/apimachinery@${STAGING_VERSION}:pkg/apis/meta/v1/types.go"
