"""A role's `updateStrategy.partition` carried from the StormService to its RoleSets in place.

The partition is not part of a revision (see `revisions.py`): lowering it goes on with the same
rollout, raising it holds more instances back. So a change of it alone makes no new revision and
no rewrite; it is written into every live RoleSet's role here, like role replicas, and the
RoleSet controller applies it to the rollout inside the RoleSet (`controller/roleset/partition.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


def role_partition(role: Mapping[str, Any]) -> int:
    """A role's partition; 0 when unset (no instance held)."""
    value = (role.get("updateStrategy") or {}).get("partition")
    return 0 if value is None else int(value)


def role_partition_patch(roleset: Mapping[str, Any], desired_template: Mapping[str, Any]) -> list[Obj]:
    """JSON patch giving each role of `roleset` the partition its role in the StormService
    template has (matched by name); [] when nothing differs, so a StormService without partitions
    never writes. Each write is guarded by a `test` of the role's name at its index, as
    `scale.role_replica_patch` does."""
    wanted = {
        r.get("name"): role_partition(r) for r in ((desired_template.get("spec") or {}).get("roles") or ())
    }
    ops: list[Obj] = []
    for i, role in enumerate((roleset.get("spec") or {}).get("roles") or ()):
        name = role.get("name")
        if name not in wanted or role_partition(role) == wanted[name]:
            continue
        base = f"/spec/roles/{i}/updateStrategy"
        ops.append({"op": "test", "path": f"/spec/roles/{i}/name", "value": name})
        strategy = role.get("updateStrategy")
        if wanted[name] == 0:
            ops.append({"op": "remove", "path": f"{base}/partition"})
        elif isinstance(strategy, Mapping):
            ops.append({"op": "add", "path": f"{base}/partition", "value": wanted[name]})
        else:
            ops.append({"op": "add", "path": base, "value": {"partition": wanted[name]}})
    return ops
