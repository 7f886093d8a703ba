"""Role fields that are policy, not pod content: carried to RoleSets in place.

A role's recovery grace and restart budget (`recoveryGracePeriodSeconds`, `restartBudget`, see
roleset/recovery.py) change what the RoleSet controller does about failed pods, not what a pod
runs. Revisions leave them out (`revisions.NOT_VERSIONED_ROLE_FIELDS`), so changing them starts
no rollout; like role replicas they are taken from the StormService's own template wherever a
RoleSet is made from a revision (`revisions.with_unversioned_fields`), and patched into existing
RoleSets of every revision.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

ROLE_POLICY_FIELDS = ("recoveryGracePeriodSeconds", "restartBudget")


def _desired_policies(desired_template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(r.get("name")): {k: r[k] for k in ROLE_POLICY_FIELDS if r.get(k) is not None}
        for r in ((desired_template.get("spec") or {}).get("roles") or ())
        if isinstance(r, Mapping)
    }


def role_policy_patch(roleset: Mapping[str, Any], desired_template: Mapping[str, Any]) -> list[Obj]:
    """JSON patch setting the policy fields of each role of `roleset` to the StormService's;
    [] when nothing differs. Each change is guarded by a `test` of the role's name at that
    position, as `scale.role_replica_patch` does."""
    wanted = _desired_policies(desired_template)
    ops: list[Obj] = []
    for i, role in enumerate((roleset.get("spec") or {}).get("roles") or ()):
        name = role.get("name")
        if name not in wanted:
            continue
        changes: list[Obj] = []
        for key in ROLE_POLICY_FIELDS:
            have, want = role.get(key), wanted[name].get(key)
            if have == want:
                continue
            path = f"/spec/roles/{i}/{key}"
            if want is None:
                changes.append({"op": "remove", "path": path})
            else:
                changes.append({"op": "add", "path": path, "value": copy.deepcopy(want)})
        if changes:
            ops.append({"op": "test", "path": f"/spec/roles/{i}/name", "value": name})
            ops.extend(changes)
    return ops
