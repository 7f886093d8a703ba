"""Entry and worker templates of a grouped role: which template, label and env each member gets,
the role template hash over both templates, and in-place updates per member."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import rules as r
from apis.v1alpha1.types import RoleSpec
from controller.roleset import inplace as ip
from controller.roleset import labels as L
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.roleset.sync import template_hash
from controller.runtime.errors import Invalid
from controller.runtime.resources import PODS
from tests.unit.roleset.harness import NS, Harness, role, roleset

RS = RoleSetInfo(
    name="llm-roleset-abcde",
    namespace="ns",
    uid="uid-1",
    labels={L.STORM_SERVICE_NAME_LABEL: "llm"},
    annotations={L.ROLESET_INDEX_ANNOTATION: "0"},
)
WORKER: dict[str, Any] = {
    "metadata": {"labels": {"kind": "worker"}},
    "spec": {"containers": [{"name": "engine", "image": "worker:1", "command": ["ray", "worker"]}]},
}
ENTRY: dict[str, Any] = {
    "metadata": {"labels": {"kind": "entry"}},
    "spec": {"containers": [{"name": "engine", "image": "entry:1", "command": ["ray", "head"]}]},
}
KTHENA_ENV = {L.ENV_GROUP_SIZE, L.ENV_ENTRY_ADDRESS, L.ENV_WORKER_INDEX}


def inputs(entry: dict[str, Any] | None, *, group_size: int = 3, template_hash: str = "h1") -> PodSpecInputs:
    return PodSpecInputs(
        role="decode",
        template=WORKER,
        template_hash=template_hash,
        group_size=group_size,
        entry_template=entry,
    )


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


LEADER = "llm-roleset-abcde-decode-h1-2-0.llm.ns.svc"


@pytest.mark.parametrize(
    ("entry", "member", "image", "kind", "entry_label", "kthena_env"),
    [
        # With an entryTemplate: member 0 from it, labelled; every member gets Kthena's env.
        (
            ENTRY,
            0,
            "entry:1",
            "entry",
            "true",
            {"GROUP_SIZE": "3", "ENTRY_ADDRESS": LEADER, "WORKER_INDEX": "0"},
        ),
        (
            ENTRY,
            1,
            "worker:1",
            "worker",
            None,
            {"GROUP_SIZE": "3", "ENTRY_ADDRESS": LEADER, "WORKER_INDEX": "1"},
        ),
        (
            ENTRY,
            2,
            "worker:1",
            "worker",
            None,
            {"GROUP_SIZE": "3", "ENTRY_ADDRESS": LEADER, "WORKER_INDEX": "2"},
        ),
        # Without: every member from the template, no label, no new env (AIBrix's pods as they were).
        (None, 0, "worker:1", "worker", None, {}),
        (None, 1, "worker:1", "worker", None, {}),
    ],
)
def test_member_template_label_and_env(
    entry: dict[str, Any] | None,
    member: int,
    image: str,
    kind: str,
    entry_label: str | None,
    kthena_env: dict[str, str],
) -> None:
    pod = render_pod(RS, inputs(entry), index=2, member=member)
    container = pod["spec"]["containers"][0]
    assert container["image"] == image
    assert container["command"] == ["ray", "head" if kind == "entry" else "worker"]
    labels = pod["metadata"]["labels"]
    assert labels["kind"] == kind
    assert labels.get(L.ENTRY_LABEL) == entry_label
    got = env(pod)
    assert {k: v for k, v in got.items() if k in KTHENA_ENV} == kthena_env
    # Today's group env is there either way; ENTRY_ADDRESS is the same name as LEADER_ADDRESS.
    assert got["POD_GROUP_SIZE"] == "3" and got["POD_GROUP_INDEX"] == str(member)
    assert got["LEADER_ADDRESS"] == LEADER


def test_without_entry_template_the_pod_is_what_it_always_was() -> None:
    for member in range(3):
        with_none = render_pod(RS, inputs(None), index=1, member=member)
        plain = render_pod(
            RS, PodSpecInputs(role="decode", template=WORKER, template_hash="h1", group_size=3), 1, member
        )
        assert with_none == plain
        assert L.ENTRY_LABEL not in with_none["metadata"]["labels"]
        assert not KTHENA_ENV & set(env(with_none))


def test_role_template_hash_covers_the_entry_template_only_when_set() -> None:
    plain = template_hash(WORKER)
    assert template_hash(WORKER, None) == plain  # byte-identical to the hash without the field
    with_entry = template_hash(WORKER, ENTRY)
    assert with_entry != plain
    other_entry = copy.deepcopy(ENTRY)
    other_entry["spec"]["containers"][0]["image"] = "entry:2"
    assert template_hash(WORKER, other_entry) not in (plain, with_entry)
    other_worker = copy.deepcopy(WORKER)
    other_worker["spec"]["containers"][0]["image"] = "worker:2"
    assert template_hash(other_worker, ENTRY) not in (plain, with_entry)


def test_in_place_compares_the_entry_with_the_entry_template_and_workers_with_the_template() -> None:
    new_entry = copy.deepcopy(ENTRY)
    new_entry["spec"]["containers"][0]["image"] = "entry:2"
    old, new = inputs(ENTRY, template_hash="h1"), inputs(new_entry, template_hash="h2")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for member in range(3):
        live = render_pod(RS, old, 0, member)
        desired = render_pod(RS, new, 0, member)
        assert ip.inplace_diff(live, desired) is None
        patch = ip.start_patch(live, desired, "h2", now)
        if member == 0:
            assert patch["spec"]["containers"] == [{"name": "engine", "image": "entry:2"}]
        else:
            assert "spec" not in patch  # a worker's images are unchanged: nothing to restart
    # Anything but an image in the entry template is no in-place update.
    new_command = copy.deepcopy(ENTRY)
    new_command["spec"]["containers"][0]["command"] = ["ray", "start"]
    live = render_pod(RS, old, 0, 0)
    assert ip.inplace_diff(live, render_pod(RS, inputs(new_command, template_hash="h3"), 0, 0)) is not None
    # Adding an entryTemplate to a role changes its workers' env too: no in-place update.
    plain = render_pod(RS, inputs(None), 0, 1)
    assert ip.inplace_diff(plain, render_pod(RS, old, 0, 1)) is not None


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ({"entryTemplate": ENTRY}, r.MSG_ENTRY_TEMPLATE_NEEDS_GROUP),
        ({"entryTemplate": ENTRY, "podGroupSize": 1}, r.MSG_ENTRY_TEMPLATE_NEEDS_GROUP),
        ({"entryTemplate": {"spec": {"containers": []}}, "podGroupSize": 2}, r.MSG_ENTRY_TEMPLATE_CONTAINERS),
    ],
)
def test_model_refuses(fragment: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.split(":")[0]):
        RoleSpec.model_validate({"name": "decode", "template": WORKER, **fragment})


def test_model_takes_an_entry_template_with_groups() -> None:
    spec = RoleSpec.model_validate(
        {"name": "decode", "template": WORKER, "podGroupSize": 2, "entryTemplate": ENTRY}
    )
    assert spec.entry_template == ENTRY
    assert RoleSpec.model_validate({"name": "decode", "template": WORKER}).entry_template is None


# --- the reconcile ----------------------------------------------------------------------------------


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.stop()


def grouped(strategy: str = "InPlaceIfPossible") -> dict[str, Any]:
    return role(
        "decode",
        replicas=2,
        image="worker:1",
        podGroupSize=3,
        entryTemplate=copy.deepcopy(ENTRY),
        updateStrategy={"type": strategy, "maxUnavailable": 2},
    )


async def test_groups_have_one_entry_each_and_a_new_entry_image_is_patched_in_place(h: Harness) -> None:
    h.create(roleset(roles=[grouped()]))
    await h.converge()
    pods = h.pods()
    assert len(pods) == 6
    entries = [p for p in pods if p["metadata"]["labels"].get(L.ENTRY_LABEL) == "true"]
    assert sorted(p["metadata"]["labels"][L.POD_GROUP_INDEX_LABEL] for p in entries) == ["0", "0"]
    assert {p["spec"]["containers"][0]["image"] for p in entries} == {"entry:1"}
    workers = [p for p in pods if p not in entries]
    assert {p["spec"]["containers"][0]["image"] for p in workers} == {"worker:1"}
    spec_role = h.get()["spec"]["roles"][0]
    hash_ = template_hash(spec_role["template"], spec_role["entryTemplate"])
    assert {p["metadata"]["labels"][L.ROLE_TEMPLATE_HASH_LABEL] for p in pods} == {hash_}

    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    h.update_spec(
        lambda s: s["roles"][0]["entryTemplate"]["spec"]["containers"][0].__setitem__("image", "entry:2")
    )
    await h.sync()
    await h.sync()
    patched = {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in h.pods()
        if p["metadata"]["annotations"].get(L.INPLACE_TARGET_HASH_ANNOTATION)
    }
    # Every member of an updated group is marked with the target; only the entries' images move.
    assert patched, "the in-place update did not start"
    for name, image in patched.items():
        pod = h.client.get_object(PODS, NS, name)
        assert pod is not None
        is_entry = pod["metadata"]["labels"].get(L.ENTRY_LABEL) == "true"
        assert image == ("entry:2" if is_entry else "worker:1")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.pods()} == uids
    assert "InPlaceFallback" not in h.recorder.reasons()


async def test_a_new_entry_template_with_recreate_replaces_the_groups(h: Harness) -> None:
    h.create(roleset(roles=[grouped("Recreate")]))
    await h.converge()
    before = {p["metadata"]["uid"] for p in h.pods()}
    h.update_spec(
        lambda s: s["roles"][0]["entryTemplate"]["spec"]["containers"][0].__setitem__("image", "entry:2")
    )
    await h.converge()
    after = h.pods()
    assert len(after) == 6 and not before & {p["metadata"]["uid"] for p in after}
    entries = [p for p in after if p["metadata"]["labels"].get(L.ENTRY_LABEL) == "true"]
    assert {p["spec"]["containers"][0]["image"] for p in entries} == {"entry:2"}
    assert len(entries) == 2


INVALID = Invalid(
    422, "Invalid", 'Pod "rs-decode-x" is invalid: spec.containers[0].image: Invalid value: "worker:bad"'
)


def dry_runs(h: Harness) -> int:
    return sum(1 for a in h.client.actions if a.verb == "create-dry-run" and a.resource == "pods")


async def test_both_templates_are_dry_run_before_any_pod_and_a_refused_worker_template_creates_nothing(
    h: Harness,
) -> None:
    """A role's first create would stand for a dry run of one template only: a role with an
    entryTemplate asks about the entry's and a worker's pod before creating any."""
    real_create = h.client.create

    async def refuse_bad_worker(resource: Any, namespace: str | None, body: Any, **kw: Any) -> Any:
        if resource == PODS and body["spec"]["containers"][0].get("image") == "worker:bad":
            await real_create(resource, namespace, body, dry_run=True)  # recorded as an attempt
            raise INVALID
        return await real_create(resource, namespace, body, **kw)

    h.client.create = refuse_bad_worker  # type: ignore[method-assign]
    bad = grouped()
    bad["template"]["spec"]["containers"][0]["image"] = "worker:bad"
    h.create(roleset(roles=[bad]))
    await h.converge()
    assert h.pods() == [], "pods were made of a template the API server refuses"
    assert dry_runs(h) == 2  # the entry's (accepted), then a worker's (refused)
    failure = h.condition("ReplicaFailure")
    assert failure is not None and (failure["status"], failure["reason"]) == ("True", "InvalidPodTemplate")
    assert "worker:bad" in failure["message"]
    # Fixed: both asked about again, then the groups are made.
    h.client.create = real_create  # type: ignore[method-assign]
    h.update_spec(
        lambda s: s["roles"][0]["template"]["spec"]["containers"][0].__setitem__("image", "worker:1")
    )
    await h.converge()
    assert len(h.pods()) == 6
    assert dry_runs(h) == 4
