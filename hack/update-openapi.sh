#!/usr/bin/env bash
# Regenerates apis/openapi/podtemplatespec-v<minor>.json: the PodTemplateSpec schema that every
# role template in our CRDs embeds, taken from Kubernetes' own published OpenAPI v3 document
# (api/openapi-spec/v3/api__v1_openapi.json in the k8s.io/kubernetes module), not written by hand.
#
# Only the k8s.io/kubernetes module zip is downloaded (through the Go module proxy, into the
# module cache); nothing is built. The conversion to a CRD-compatible structural schema is
# apis/crdgen/openapi.py. Afterwards run `python -m apis.crdgen` to regenerate the CRDs.
#
# Usage: hack/update-openapi.sh [k8s version, default v1.34.4]
set -euo pipefail

K8S_VERSION="${1:-v1.34.4}"
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-${ROOT_DIR}/.venv/bin/python}"
minor="$(echo "${K8S_VERSION#v}" | cut -d. -f1,2)"
OUT="${ROOT_DIR}/apis/openapi/podtemplatespec-v${minor}.json"

# Outside any module, so the download does not touch a go.mod; -json prints the extracted Dir.
workdir="$(mktemp -d)"
trap 'rm -rf "${workdir}"' EXIT
dir="$(cd "${workdir}" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | "${PY}" -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d["Dir"])')"

spec="${dir}/api/openapi-spec/v3/api__v1_openapi.json"
[[ -f "${spec}" ]] || { echo "update-openapi: ${spec} not found" >&2; exit 1; }

cd "${ROOT_DIR}"
"${PY}" -m apis.crdgen.openapi "${spec}" "${OUT}" --source "k8s.io/kubernetes@${K8S_VERSION}:api/openapi-spec/v3/api__v1_openapi.json"
