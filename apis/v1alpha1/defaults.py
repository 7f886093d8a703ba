"""Default values, shared by the pydantic models and the CRD schema (`default:`), so they agree.

The API server applies the CRD defaults when an object is stored, so anything the controller
reads from the server already carries them; the models apply the same values to objects parsed
from files (tests, samples) so both paths look alike.
"""

from __future__ import annotations

from typing import Final

# StormService
DEFAULT_STORM_SERVICE_REPLICAS: Final = 1  # Fix: the reference documents 1 but panics on nil
DEFAULT_REVISION_HISTORY_LIMIT: Final = 10
DEFAULT_STORM_SERVICE_UPDATE_STRATEGY: Final = "RollingUpdate"

# RoleSet
DEFAULT_ROLE_SET_UPDATE_STRATEGY: Final = "Sequential"

# Role
DEFAULT_ROLE_REPLICAS: Final = 1
DEFAULT_POD_GROUP_SIZE: Final = 1
DEFAULT_ROLE_UPDATE_STRATEGY: Final = "Recreate"
DEFAULT_RECOVERY_POLICY: Final = "ReplaceUnhealthy"

# TopologyPolicy
DEFAULT_TOPOLOGY_MODE: Final = "Preferred"

# maxSurge / maxUnavailable when unset, for StormServices and roles alike. AIBrix resolves a nil
# value as 0 (intstr.ValueOrDefault(x, FromInt(0))), and the fencepost rule then turns (0, 0) into
# (0, 1): replace one at a time, never above the desired count. Keeping that (rather than
# Deployment's 25%/25%) means AIBrix manifests roll out exactly as before. These are resolved in
# code, not written into objects by the CRD, so "unset" stays visible.
DEFAULT_MAX_SURGE: Final = 0
DEFAULT_MAX_UNAVAILABLE: Final = 0
