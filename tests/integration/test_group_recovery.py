"""Graceful recovery of pod groups and the restart budget (issue 15, feature 5), on the local
control plane.

A member "fails" as Kthena sees it: its container restarted and the pod is not Ready. The tests
report that as a kubelet would (restartCount 1, ContainersReady and Ready False, through the
status subresource; kwok leaves a pod with ContainersReady=False as it is), or delete a member.

- test_the_crd_refuses_recovery_settings_without_groups: admission, with the messages users see;
  the sample is admitted.
- test_a_member_ready_again_within_the_grace_keeps_its_group: not Ready for a few seconds of a
  30 s grace, then Ready: nothing is replaced, past the end of the grace too.
- test_a_member_not_ready_past_the_grace_recreates_its_group: the whole group is recreated
  (recoveryPolicy Recreate), not before the grace ended.
- test_a_group_past_its_restart_budget_is_reported_and_left_as_it_is: a deleted member is
  recovered at once (no grace for a pod that cannot come back); the second recovery within the
  window is refused: condition + Warning event naming the group, the survivor kept, nothing
  created; a restarted controller still holds it (the history is in the RoleSet status); a
  larger budget, set in the StormService, reaches the RoleSet in place (no new revision) and
  the group is recovered.
- test_without_the_fields_behaviour_is_unchanged: samples/prefill-decode.yaml as it is: a
  restarted, not-Ready member is left to the kubelet, a deleted one is replaced at once, and
  the RoleSet status has no groupRecoveries.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.runtime.timestamps import format_time
from tests.cluster import ControllerFactory, Kubectl
from tests.kubectl_reads import StormServiceReads
from tests.manifests import role, storm
from tests.storm_reads import condition, is_pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SETTLE = 240.0  # generous: the machine is shared and loaded
GRACE = 30

Obj = dict[str, Any]


def decode_role(group_size: int = 2, **extra: Any) -> Obj:
    return role("decode", 1, podGroupSize=group_size, recoveryPolicy="Recreate", **extra)


class Service(StormServiceReads):
    """Reads and pod status writes for one StormService with one grouped role."""

    def pods(self, role: str | None = "decode") -> list[Obj]:
        return super().pods(role)

    def members(self, role: str = "decode") -> dict[int, Obj]:
        return {
            int(p["metadata"]["labels"]["stormservice.orchestration.aibrix.ai/pod-group-index"]): p
            for p in self.pods(role)
        }

    def uids(self, role: str = "decode") -> dict[int, str]:
        return {k: p["metadata"]["uid"] for k, p in self.members(role).items()}

    def roleset(self) -> Obj:
        (rs,) = self.rolesets()
        return rs

    def condition(self, type_: str) -> Obj:
        """The RoleSet's condition of that type; {} when it has none."""
        return condition(self.roleset(), type_) or {}

    def wait_group_ready(self, size: int = 2, role: str = "decode") -> dict[int, str]:
        def done() -> bool:
            members = self.members(role)
            return len(members) == size and all(is_pod_ready(p) for p in members.values())

        self.wait(done, f"a ready group of {size} in role {role}")
        return self.uids(role)

    def crash(self, pod: Obj, since: datetime) -> None:
        """What a kubelet reports when the container crashed and was restarted, and is not Ready
        (yet): restartCount 1, ContainersReady and Ready False since `since`."""
        self._report(pod, ready=False, since=since)

    def recover(self, pod: Obj) -> None:
        self._report(pod, ready=True, since=datetime.now(UTC))

    def _report(self, pod: Obj, *, ready: bool, since: datetime) -> None:
        status = pod.get("status") or {}
        statuses = []
        for cs in status.get("containerStatuses") or ():
            statuses.append({**cs, "ready": ready, "started": ready, "restartCount": 1})
        state = "True" if ready else "False"
        reason = {} if ready else {"reason": "ContainersNotReady"}
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "ContainersReady",
                        "status": state,
                        "lastTransitionTime": format_time(since),
                        **reason,
                    },
                    {"type": "Ready", "status": state, "lastTransitionTime": format_time(since), **reason},
                ],
                "containerStatuses": statuses,
            }
        }
        self.kubectl(
            "patch", "-n", self.namespace, f"pod/{pod['metadata']['name']}", "--subresource=status",
            "--type=strategic", "-p", json.dumps(patch),
        )  # fmt: skip


def start(
    kubectl: Kubectl, namespace: str, run_controller: ControllerFactory, name: str, role: Obj, *extra: str
) -> Service:
    controller = run_controller(f"--namespace={namespace}", *extra)
    kubectl.apply(storm(name, role, strategy=None), "-n", namespace)
    return Service(kubectl, namespace, name, controller)


def test_the_crd_refuses_recovery_settings_without_groups(
    kubectl: Kubectl, namespace: str, crds: list[str]
) -> None:
    budget = {"maxRestarts": 1, "windowSeconds": 60}
    refusals = [
        (
            storm("ungrouped", decode_role(1, recoveryGracePeriodSeconds=30), strategy=None),
            "recoveryGracePeriodSeconds and restartBudget apply to pod groups: they need podGroupSize > 1",
        ),
        (
            storm("ungrouped-budget", decode_role(1, restartBudget=budget), strategy=None),
            "recoveryGracePeriodSeconds and restartBudget apply to pod groups: they need podGroupSize > 1",
        ),
        (
            storm("negative-grace", decode_role(recoveryGracePeriodSeconds=-1), strategy=None),
            "recoveryGracePeriodSeconds in body should be greater than or equal to 0",
        ),
        (
            storm(
                "no-restarts",
                decode_role(restartBudget={"maxRestarts": 0, "windowSeconds": 60}),
                strategy=None,
            ),
            "maxRestarts in body should be greater than or equal to 1",
        ),
        (
            storm("no-window", decode_role(restartBudget={"maxRestarts": 1}), strategy=None),
            "restartBudget.windowSeconds: Required value",
        ),
    ]
    for manifest, message in refusals:
        refused = kubectl.apply(manifest, "-n", namespace, check=False)
        assert refused.returncode != 0, f"admitted, expected: {message}"
        assert message in refused.stderr, refused.stderr

    kubectl.apply(
        storm("grouped", decode_role(recoveryGracePeriodSeconds=0, restartBudget=budget), strategy=None),
        "-n",
        namespace,
    )
    sample = (REPO / "samples" / "group-recovery.yaml").read_text()
    kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-", input=sample)


def test_a_member_ready_again_within_the_grace_keeps_its_group(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: ControllerFactory
) -> None:
    svc = start(kubectl, namespace, run_controller, "graceful", decode_role(recoveryGracePeriodSeconds=GRACE))
    before = svc.wait_group_ready()
    since = datetime.now(UTC)
    svc.crash(svc.members()[1], since)
    svc.wait(lambda: svc.condition("Ready").get("status") == "False", "the RoleSet not Ready")
    svc.recover(svc.members()[1])

    # Past the end of the grace, with margin: the controller looked again then (it was woken
    # for it) and found the member Ready.
    end = since + timedelta(seconds=GRACE + 10)
    while datetime.now(UTC) < end:
        assert svc.uids() == before, "the group was replaced although its member recovered"
        time.sleep(1)
    svc.wait(lambda: svc.condition("Ready").get("status") == "True", "the RoleSet Ready again")
    assert svc.uids() == before
    assert not svc.events("GroupRestartBudgetExhausted")

    # Not pod content: a new grace reaches the RoleSet in place, with no new revision and no pod
    # replaced.
    revisions = svc.revisions()
    kubectl(
        "patch", "stormservice", "graceful", "-n", namespace, "--type=json", "-p",
        json.dumps([{"op": "replace", "path": "/spec/template/spec/roles/0/recoveryGracePeriodSeconds", "value": 45}]),
    )  # fmt: skip
    svc.wait(
        lambda: svc.roleset()["spec"]["roles"][0].get("recoveryGracePeriodSeconds") == 45,
        "the new grace on the RoleSet",
    )
    assert svc.revisions() == revisions
    assert svc.uids() == before


def test_a_member_not_ready_past_the_grace_recreates_its_group(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: ControllerFactory
) -> None:
    svc = start(
        kubectl, namespace, run_controller, "ungraceful", decode_role(recoveryGracePeriodSeconds=GRACE)
    )
    before = svc.wait_group_ready()
    revisions = svc.revisions()
    since = datetime.now(UTC).replace(microsecond=0)
    svc.crash(svc.members()[1], since)

    svc.wait(
        lambda: not set(svc.uids().values()) & set(before.values()), "the group recreated", GRACE + SETTLE
    )
    after = svc.wait_group_ready()
    assert not set(after.values()) & set(before.values())
    created = min(datetime.fromisoformat(p["metadata"]["creationTimestamp"]) for p in svc.pods())
    # Second-resolution timestamps on both sides.
    assert created >= since + timedelta(seconds=GRACE - 1), f"recreated at {created}, the grace ends later"
    deleted = [e["message"] for e in svc.events("SuccessfulDelete")]
    assert any("not-recovered" in m for m in deleted), deleted  # the member whose grace ended
    assert any("group-recreate" in m for m in deleted), deleted  # and the rest of its group
    assert svc.revisions() == revisions


def test_a_group_past_its_restart_budget_is_reported_and_left_as_it_is(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: ControllerFactory
) -> None:
    budget = {"maxRestarts": 1, "windowSeconds": 3600}
    role = decode_role(recoveryGracePeriodSeconds=GRACE, restartBudget=budget)
    svc = start(kubectl, namespace, run_controller, "budgeted", role, "--log-level=debug")
    first = svc.wait_group_ready()
    revisions = svc.revisions()

    deleted_at = time.monotonic()
    kubectl("delete", "pod", "-n", namespace, svc.members()[1]["metadata"]["name"], "--wait=false")
    svc.wait(lambda: not set(svc.uids().values()) & set(first.values()), "the group recreated", SETTLE)
    # A deleted member cannot come back: no grace for it.
    assert time.monotonic() - deleted_at < GRACE, "the recovery waited for a grace"
    second = svc.wait_group_ready()
    (entry,) = svc.roleset()["status"]["groupRecoveries"]
    assert entry["role"] == "decode" and len(entry["times"]) == 1
    group = entry["group"]
    assert not svc.condition("ReplicaFailure")

    kubectl("delete", "pod", "-n", namespace, svc.members()[1]["metadata"]["name"], "--wait=false")
    svc.wait(
        lambda: svc.condition("ReplicaFailure").get("reason") == "GroupRestartBudgetExhausted",
        "ReplicaFailure GroupRestartBudgetExhausted",
    )
    cond = svc.condition("ReplicaFailure")
    assert cond["status"] == "True" and group in cond["message"] and "role decode" in cond["message"]
    svc.wait(lambda: svc.events("GroupRestartBudgetExhausted"), "the Warning event")
    (event,) = svc.events("GroupRestartBudgetExhausted")
    assert event["type"] == "Warning" and group in event["message"]
    assert event["involvedObject"]["kind"] == "RoleSet"
    assert svc.uids() == {0: second[0]}  # the survivor kept, the member not created

    # A new controller process: the history is read from the RoleSet status, not memory. Its
    # pass over the RoleSet holds the group and asks to be woken when the window frees it.
    svc.controller.stop()
    svc.controller = run_controller(f"--namespace={namespace}", "--log-level=debug", name="restarted")
    key = f"{namespace}/{svc.roleset()['metadata']['name']}"

    def held_after_restart() -> bool:
        for line in svc.controller.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "reconciled" and record.get("key") == key:
                requeue = record.get("requeue_after")
                return requeue is not None and float(requeue) > 3000
        return False

    svc.wait(held_after_restart, "the restarted controller's pass over the RoleSet")
    assert svc.uids() == {0: second[0]}
    assert svc.condition("ReplicaFailure").get("reason") == "GroupRestartBudgetExhausted"

    # A larger budget in the StormService: set on the RoleSet in place, no new revision, and
    # the group is recovered at once.
    kubectl(
        "patch", "stormservice", "budgeted", "-n", namespace, "--type=json", "-p",
        json.dumps([{"op": "replace", "path": "/spec/template/spec/roles/0/restartBudget/maxRestarts", "value": 2}]),
    )  # fmt: skip
    svc.wait(lambda: not set(svc.uids().values()) & set(second.values()), "the group recreated", SETTLE)
    svc.wait_group_ready()
    svc.wait(lambda: not svc.condition("ReplicaFailure"), "ReplicaFailure gone")
    (entry,) = svc.roleset()["status"]["groupRecoveries"]
    assert len(entry["times"]) == 2
    assert svc.roleset()["spec"]["roles"][0]["restartBudget"]["maxRestarts"] == 2
    assert svc.revisions() == revisions


def test_without_the_fields_behaviour_is_unchanged(
    kubectl: Kubectl, namespace: str, crds: list[str], run_controller: ControllerFactory
) -> None:
    controller = run_controller(f"--namespace={namespace}")
    kubectl("apply", "-n", namespace, "-f", str(REPO / "samples" / "prefill-decode.yaml"))
    svc = Service(kubectl, namespace, "llama-pd", controller)

    def rolesets() -> list[Obj]:
        items: list[Obj] = svc.get("rolesets", "-l", "storm-service-name=llama-pd")["items"]
        return items

    def all_ready() -> bool:
        rs = rolesets()
        return len(rs) == 2 and all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (r.get("status") or {}).get("conditions") or ()
            )
            for r in rs
        )

    svc.wait(all_ready, "both RoleSets Ready")
    rs = rolesets()[0]
    rs_name = rs["metadata"]["name"]

    def group() -> dict[int, Obj]:
        return {
            int(p["metadata"]["labels"]["stormservice.orchestration.aibrix.ai/pod-group-index"]): p
            for p in svc.pods()
            if p["metadata"]["labels"]["roleset-name"] == rs_name
        }

    before = {k: p["metadata"]["uid"] for k, p in group().items()}
    assert len(before) == 2
    # A restarted, not-Ready member is the kubelet's business without a grace: left alone, for
    # longer than any grace in these tests.
    since = datetime.now(UTC)
    svc.crash(group()[1], since)
    end = since + timedelta(seconds=GRACE + 10)
    while datetime.now(UTC) < end:
        assert {k: p["metadata"]["uid"] for k, p in group().items()} == before
        time.sleep(1)
    svc.recover(group()[1])

    # A deleted member is replaced at once (the sample's recoveryPolicy is the default,
    # ReplaceUnhealthy): the other member keeps running.
    kubectl("delete", "pod", "-n", namespace, group()[0]["metadata"]["name"], "--wait=false")
    svc.wait(
        lambda: len(group()) == 2 and group()[0]["metadata"]["uid"] != before[0],
        "the member replaced",
    )
    assert group()[1]["metadata"]["uid"] == before[1]
    svc.wait(all_ready, "both RoleSets Ready again")
    for r in rolesets():
        assert "groupRecoveries" not in (r.get("status") or {})
        assert all(c["reason"] != "GroupRestartBudgetExhausted" for c in r["status"]["conditions"])
    assert not svc.events("GroupRestartBudgetExhausted")
