"""Whether the API server accepts pods of a role's template, asked once per template.

The CRD schema admits pod templates that the API server then refuses as pods (a container name
that is no DNS label, a port out of range, a field combination the pod validation forbids). A
rollout to such a template would delete the old pods and fail every create. So before a role
creates, replaces or patches pods for a template it has not checked yet, one pod of it is
created with dryRun=All: the API server validates and admits it and stores nothing. A rejection
holds everything the role would do for that template (existing pods stay) until the template
changes; scale-down and the removal of dead pods go on. The answers are kept in a
controller.runtime.dryrun.Verdicts per RoleSet and role, for the role's template hash.

A plan that only creates pods (a new RoleSet, a scale-up, lost pods replaced) needs no dry run:
it has nothing to keep, and its first create, alone in the first slow-start batch, asks the same
question with a real pod. Its answer is recorded as the dry run's would be, so a refused template
holds the role the same way; an accepted one saves a request per role and RoleSet.
"""

from __future__ import annotations

import dataclasses

from controller.roleset import naming
from controller.roleset.scale import RolePlan
from controller.runtime.client import Obj

#: The members dry-run for a role with an entryTemplate: the entry (0) and a worker (1), one pod
#: of each of its two templates. Its first create would check only one of them.
ENTRY_AND_WORKER: tuple[int, ...] = (0, 1)

# Deletions that make room for pods of the template: held while it is rejected.
REPLACING_REASONS = frozenset({"rollout", "group-recreate"})


def acts_on_template(plan: RolePlan) -> bool:
    """Whether the plan creates pods of the template, makes room for them or patches pods to it."""
    return bool(plan.creates or plan.inplace or any(d.reason in REPLACING_REASONS for d in plan.deletes))


def probed_by_create(plan: RolePlan) -> bool:
    """Whether the plan's own first create can stand for the dry run: it creates pods and
    neither deletes to make room for them nor patches pods to the template."""
    return (
        bool(plan.creates)
        and not plan.inplace
        and not any(d.reason in REPLACING_REASONS for d in plan.deletes)
    )


def held(plan: RolePlan) -> RolePlan:
    """The plan without what needs the template: no creations, in-place patches or deletions that
    make room for new pods."""
    return dataclasses.replace(
        plan,
        creates=[],
        inplace=[],
        fallback=[],
        deletes=[d for d in plan.deletes if d.reason not in REPLACING_REASONS],
    )


def dry_run_body(pod: Obj, roleset: str, role: str) -> Obj:
    """The pod to send with dryRun=All: generated name, so that the pod it stands for (which may
    exist, or still be terminating) cannot make the dry run fail with AlreadyExists."""
    meta = dict(pod.get("metadata") or {})
    meta.pop("name", None)
    meta["generateName"] = naming.generate_name(roleset, role)
    return {**pod, "metadata": meta}
