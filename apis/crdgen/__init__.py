"""CRD generation: `python -m apis.crdgen` writes manifests/crds, `--check` compares.

The schema lives in `schema.py`; the PodTemplateSpec part comes from Kubernetes' OpenAPI
document through `openapi.py` (refreshed by hack/update-openapi.sh).
"""

from apis.crdgen.render import render_all

__all__ = ["render_all"]
