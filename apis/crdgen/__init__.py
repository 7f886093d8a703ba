"""CRD generation: `python -m apis.crdgen` writes manifests/crds, `--check` compares.

`schema.py` generates the schema from the pydantic models (apis/v1alpha1); the PodTemplateSpec
part comes from Kubernetes' OpenAPI document through `openapi.py` (refreshed by
hack/update-openapi.sh).
"""

from apis.crdgen.render import render_all

__all__ = ["render_all"]
