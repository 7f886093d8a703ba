"""Pod construction: names, labels, annotations, env, hostname/subdomain, owner reference."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.roleset import labels as L
from controller.roleset import naming
from controller.roleset.pods import PodSpecInputs, RoleSetInfo, render_pod
from controller.roleset.scheduling import topology_term
from controller.runtime import rand

RS = RoleSetInfo(
    name="llm-roleset-abcde",
    namespace="ns",
    uid="uid-1",
    labels={L.STORM_SERVICE_NAME_LABEL: "llm", "app": "x"},
    annotations={
        L.ROLESET_INDEX_ANNOTATION: "2",
        L.role_revision_annotation("decode"): "3",
        L.role_revision_name_annotation("decode"): "llm-7c9d",
    },
)
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"tier": "gpu"}, "annotations": {"note": "n"}},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "vllm",
                "env": [{"name": "ROLE_NAME", "value": "user"}, {"name": "X", "value": "$(ROLE_NAME)"}],
            },
            {"name": "side", "image": "proxy"},
        ]
    },
}


def spec(**kw: Any) -> PodSpecInputs:
    return PodSpecInputs(**{"role": "decode", "template": TEMPLATE, "template_hash": "h7", **kw})


def env(pod: dict[str, Any], container: int = 0) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][container]["env"]}


def test_stateless_pod() -> None:
    pod = render_pod(RS, spec())
    meta = pod["metadata"]
    assert "name" not in meta and meta["generateName"] == "llm-roleset-abcde-decode-"
    assert meta["labels"] == {
        "tier": "gpu",
        "roleset-name": "llm-roleset-abcde",
        "role-name": "decode",
        "role-template-hash": "h7",
        "storm-service-name": "llm",
        L.ROLE_REVISION_LABEL: "3",
        L.ROLE_REVISION_NAME_LABEL: "llm-7c9d",
    }
    assert meta["annotations"] == {"note": "n", L.ROLESET_INDEX_ANNOTATION: "2"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "orchestration.aibrix.ai/v1alpha1",
            "kind": "RoleSet",
            "name": "llm-roleset-abcde",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"]["subdomain"] == "llm"
    assert "hostname" not in pod["spec"]
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    # Built-ins first, user variable of the same name dropped, other user variables kept after.
    assert names == [
        "STORM_SERVICE_NAME",
        "ROLESET_NAME",
        "ROLESET_INDEX",
        "ROLE_NAME",
        "ROLE_TEMPLATE_HASH",
        "X",
    ]
    assert env(pod) == {
        "STORM_SERVICE_NAME": "llm",
        "ROLESET_NAME": "llm-roleset-abcde",
        "ROLESET_INDEX": "2",
        "ROLE_NAME": "decode",
        "ROLE_TEMPLATE_HASH": "h7",
        "X": "$(ROLE_NAME)",
    }
    assert env(pod, 1)["ROLE_NAME"] == "decode"
    assert TEMPLATE["spec"]["containers"][0]["env"][0]["value"] == "user", "template must not be mutated"


def test_stateful_pod() -> None:
    pod = render_pod(RS, spec(stateful=True), index=1)
    meta = pod["metadata"]
    assert meta["name"] == "llm-roleset-abcde-decode-h7-1"
    assert pod["spec"]["hostname"] == meta["name"]
    assert meta["labels"][L.ROLE_REPLICA_INDEX_LABEL] == "1"
    assert meta["annotations"][L.ROLE_REPLICA_INDEX_ANNOTATION] == "1"
    assert env(pod)["ROLE_REPLICA_INDEX"] == "1"
    assert L.PODSET_NAME_LABEL not in meta["labels"]


def test_group_member_pod() -> None:
    pod = render_pod(RS, spec(group_size=4), index=2, member=3)
    meta = pod["metadata"]
    assert meta["name"] == "llm-roleset-abcde-decode-h7-2-3"
    assert meta["labels"][L.PODSET_NAME_LABEL] == "llm-roleset-abcde-decode-h7-2"
    assert meta["labels"][L.POD_GROUP_INDEX_LABEL] == "3"
    assert meta["labels"][L.ROLE_REPLICA_INDEX_LABEL] == "2"
    e = env(pod)
    assert e["PODSET_NAME"] == "llm-roleset-abcde-decode-h7-2"
    assert e["POD_GROUP_INDEX"] == "3"
    assert e["POD_GROUP_SIZE"] == "4"
    assert e["ROLE_REPLICA_INDEX"] == "2"
    assert e["LEADER_ADDRESS"] == "llm-roleset-abcde-decode-h7-2-0.llm.ns.svc"


def test_init_containers_and_native_sidecars_get_the_env_too() -> None:
    template = copy.deepcopy(TEMPLATE)
    template["spec"]["initContainers"] = [
        {"name": "fetch", "image": "busybox", "env": [{"name": "POD_GROUP_INDEX", "value": "user"}]},
        {"name": "router", "image": "proxy", "restartPolicy": "Always"},
    ]
    pod = render_pod(RS, spec(group_size=2, template=template), index=1, member=0)
    for c in pod["spec"]["initContainers"]:
        e = {x["name"]: x.get("value", "") for x in c["env"]}
        assert (e["ROLE_NAME"], e["POD_GROUP_INDEX"], e["LEADER_ADDRESS"]) == (
            "decode",
            "0",
            "llm-roleset-abcde-decode-h7-1-0.llm.ns.svc",
        ), c["name"]
    assert template["spec"]["initContainers"][1].get("env") is None, "template must not be mutated"


def test_roleset_without_stormservice() -> None:
    rs = RoleSetInfo(name="solo", namespace="ns", uid="u")
    pod = render_pod(rs, spec(group_size=2), index=0, member=1)
    assert "subdomain" not in pod["spec"]
    assert env(pod)["LEADER_ADDRESS"] == "solo-decode-h7-0-0"
    assert env(pod)["STORM_SERVICE_NAME"] == ""


def test_scheduler_keys_and_affinity() -> None:
    term = topology_term(
        {"scope": "Role", "mode": "Required", "key": "zone"},
        storm_service="llm",
        roleset=RS.name,
        role="decode",
    )
    assert term is not None
    pod = render_pod(RS, spec(scheduler_labels={"scheduling.x-k8s.io/pod-group": "pg"}, affinity=term))
    assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "pg"
    assert pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "labelSelector": {"matchLabels": {"storm-service-name": "llm", "role-name": "decode"}},
            "topologyKey": "zone",
        }
    ]


@pytest.mark.parametrize(
    ("policy", "storm_service", "key", "selector"),
    [
        (
            {"scope": "StormService", "key": "k"},
            "llm",
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"storm-service-name": "llm"},
        ),
        (  # no StormService: its RoleSet
            {"scope": "StormService", "key": "k"},
            None,
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"roleset-name": "rs"},
        ),
        (
            {"scope": "RoleSet", "mode": "Preferred", "key": "k"},
            "llm",
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"roleset-name": "rs"},
        ),
        (  # the role across every RoleSet of the StormService, as AIBrix selects
            {"scope": "Role", "mode": "Required", "key": "k"},
            "llm",
            "requiredDuringSchedulingIgnoredDuringExecution",
            {"storm-service-name": "llm", "role-name": "r"},
        ),
        (  # a standalone RoleSet: the role within it
            {"scope": "Role", "key": "k"},
            None,
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"roleset-name": "rs", "role-name": "r"},
        ),
        (  # scope defaults to RoleSet
            {"key": "k"},
            "llm",
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"roleset-name": "rs"},
        ),
    ],
)
def test_topology_terms(
    policy: dict[str, str], storm_service: str | None, key: str, selector: dict[str, str]
) -> None:
    got = topology_term(policy, storm_service=storm_service, roleset="rs", role="r")
    assert got is not None
    assert got[0] == key
    term = got[1].get("podAffinityTerm", got[1])
    assert term["labelSelector"]["matchLabels"] == selector
    if "weight" in got[1]:
        assert got[1]["weight"] == 100


def test_long_names_are_shortened_uniquely() -> None:
    long_rs = "a" * 60
    names = {naming.member_pod_name(long_rs + s, "decode", "h7", 12, 3) for s in ("x", "y")}
    assert len(names) == 2
    for n in names:
        assert len(n) <= 63 and n.endswith("-h7-12-3")
    assert naming.member_pod_name("rs", "decode", "h7", 1, 0) == "rs-decode-h7-1-0"
    gen = naming.generate_name(long_rs, "decode")
    assert len(gen) <= 58 and gen.endswith("-")
    assert len(naming.object_name(long_rs, "decode")) <= 63


def test_stateless_pod_named_here_has_its_name_as_hostname() -> None:
    pod = render_pod(RS, spec(), name_suffix="x7k2q")
    assert pod["metadata"]["name"] == "llm-roleset-abcde-decode-x7k2q"
    assert "generateName" not in pod["metadata"]
    assert pod["spec"]["hostname"] == pod["metadata"]["name"]
    assert pod["spec"]["subdomain"] == "llm"


def test_stateless_names_fit_and_suffixes_look_generated() -> None:
    name = naming.stateless_pod_name("a" * 63, "decode", rand.random_string())
    assert len(name) <= 63
    suffixes = {rand.random_string() for _ in range(200)}
    assert len(suffixes) > 190
    assert all(len(s) == 5 and set(s) <= set(rand.ALPHABET) for s in suffixes)
