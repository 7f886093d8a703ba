"""The progress deadline through the StormService sync (harness: FakeClient, real informers):
requeued at the deadline, timed out, rolled back once through conditional writes."""

from __future__ import annotations

from typing import Any

from controller.runtime.resources import STORMSERVICES
from tests.unit.stormservice.harness import Env, storm

T0 = 1_700_000_000.0


def revision_of(roleset: dict[str, Any]) -> str:
    return str(roleset["metadata"]["labels"]["storm-service-revision"])


async def test_a_stalled_rollout_times_out_at_the_deadline_and_is_rolled_back_once() -> None:
    now = [T0]
    obj = storm(replicas=1, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0})
    obj["spec"] |= {"progressDeadlineSeconds": 60, "rollbackOnFailure": True}
    async with Env() as env:
        env.ctrl.syncer.clock = lambda: now[0]
        env.seed(STORMSERVICES, obj)
        await env.sync()
        env.all_ready()
        await env.sync()
        good = env.status()["updateRevision"]
        assert env.status()["lastReadyRevision"] == good
        assert env.condition("Progressing")["reason"] == "RolloutComplete"  # type: ignore[index]
        good_template = env.ss()["spec"]["template"]

        def v2(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(v2)
        now[0] += 1
        requeue = await env.sync()
        bad = env.status()["updateRevision"]
        assert bad != good
        new = [rs for rs in env.rolesets() if revision_of(rs) == bad]
        assert len(new) == 1
        env.report(new[0], ready=False)  # its pods never get Ready
        requeue = await env.sync()
        assert requeue is not None and 0 < requeue <= 60, requeue
        assert env.condition("Progressing")["status"] == "True"  # type: ignore[index]

        now[0] += 59
        requeue = await env.sync()
        assert env.condition("Progressing")["status"] == "True"  # type: ignore[index]
        assert requeue is not None and requeue <= 1.0, requeue

        now[0] += 1
        await env.sync()
        progressing = env.condition("Progressing")
        assert progressing is not None
        assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
        assert progressing["message"].startswith(f"revision {bad} made no progress for 60s")
        rolled_back = env.condition("RolledBack")
        assert rolled_back is not None and rolled_back["status"] == "True"
        assert rolled_back["message"].startswith(f"rolled back from revision {bad} to revision {good}")
        assert env.ss()["spec"]["template"] == good_template
        assert env.recorder.reasons().count("RolledBack") == 1

        # The rollback rolls out; the old RoleSet was never touched and is Ready: done, once.
        for _ in range(3):
            now[0] += 1
            await env.sync()
            env.all_ready()
        assert env.status()["updateRevision"] == good
        assert {revision_of(rs) for rs in env.rolesets(live_only=True)} == {good}
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]
        assert env.condition("RolledBack")["status"] == "True"  # type: ignore[index]
        assert env.recorder.reasons().count("RolledBack") == 1


async def test_the_last_ready_revision_stays_in_a_history_of_none() -> None:
    obj = storm(
        replicas=1, history_limit=0, strategy={"type": "RollingUpdate", "maxSurge": 0, "maxUnavailable": 1}
    )
    obj["spec"] |= {"progressDeadlineSeconds": 60, "rollbackOnFailure": True}
    async with Env() as env:
        env.seed(STORMSERVICES, obj)
        await env.sync()
        env.all_ready()
        await env.sync()
        good = env.status()["lastReadyRevision"]

        def v2(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(v2)
        for _ in range(4):  # the old RoleSet goes, the new one comes (never Ready)
            await env.sync()
            for rs in env.rolesets(live_only=True):
                env.report(rs, ready=False)
        status = env.status()
        assert status["currentRevision"] == status["updateRevision"] != good
        assert {revision_of(rs) for rs in env.rolesets()} == {status["updateRevision"]}
        assert good in {r["metadata"]["name"] for r in env.revisions()}


async def test_a_rollout_longer_than_the_deadline_whose_steps_are_shorter_never_times_out() -> None:
    now = [T0]
    obj = storm(replicas=3, strategy={"type": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0})
    obj["spec"] |= {"progressDeadlineSeconds": 60, "rollbackOnFailure": True}
    async with Env() as env:
        env.ctrl.syncer.clock = lambda: now[0]
        env.seed(STORMSERVICES, obj)
        for _ in range(3):
            await env.sync()
            env.all_ready()
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]

        def v2(spec: dict[str, Any]) -> None:
            spec["template"]["spec"]["roles"][0]["template"]["spec"]["containers"][0]["image"] = "prefill:v2"

        await env.edit(v2)
        started = now[0]
        for _ in range(20):
            now[0] += 50  # each step within the deadline
            await env.sync()
            progressing = env.condition("Progressing")
            assert progressing is not None and progressing["status"] == "True", progressing
            if env.condition("Ready")["status"] == "True":  # type: ignore[index]
                break
            env.all_ready()
        assert env.condition("Ready")["status"] == "True"  # type: ignore[index]
        assert now[0] - started > 60 * 2
        assert "RolledBack" not in {c["type"] for c in env.status()["conditions"]}
        assert env.recorder.reasons().count("RolledBack") == 0
