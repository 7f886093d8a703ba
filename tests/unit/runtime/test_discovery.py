"""API discovery of optional kinds: who hears of which change."""

from __future__ import annotations

from typing import Any

import pytest

from controller.runtime.discovery import Discovery
from controller.runtime.resources import Resource

PODSETS = Resource("orchestration.aibrix.ai", "v1alpha1", "podsets", "PodSet")
PODGROUPS = Resource("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup")


class ServedResources:
    """The API server's discovery answers: plurals by group-version (absent: not served)."""

    def __init__(self) -> None:
        self.by_group_version: dict[str, set[str]] = {}

    async def api_resources(self, group_version: str) -> set[str] | None:
        return self.by_group_version.get(group_version)


def discovery(server: ServedResources) -> Discovery:
    client: Any = server
    return Discovery(client)


@pytest.mark.parametrize(
    ("installed", "podset_changes", "podgroup_changes"),
    [
        ({}, [], []),
        ({"scheduling.x-k8s.io/v1alpha1": {"podgroups"}}, [], [(PODGROUPS, True)]),
        ({"orchestration.aibrix.ai/v1alpha1": {"podsets"}}, [(PODSETS, True)], []),
        (
            {"orchestration.aibrix.ai/v1alpha1": {"podsets"}, "scheduling.x-k8s.io/v1alpha1": {"podgroups"}},
            [(PODSETS, True)],
            [(PODGROUPS, True)],
        ),
        # The group-version is served (our own kinds) without PodSets.
        ({"orchestration.aibrix.ai/v1alpha1": {"rolesets"}}, [], []),
    ],
)
async def test_a_handler_hears_only_of_the_resources_it_tracks(
    installed: dict[str, set[str]],
    podset_changes: list[tuple[Resource, bool]],
    podgroup_changes: list[tuple[Resource, bool]],
) -> None:
    # A scheduler's PodGroups appearing once started a PodSet informer, which failed with 404
    # forever and held the controller's cache sync.
    server = ServedResources()
    d = discovery(server)
    heard_podsets: list[tuple[Resource, bool]] = []
    heard_podgroups: list[tuple[Resource, bool]] = []
    d.track([PODSETS], lambda r, served: heard_podsets.append((r, served)))
    d.track([PODGROUPS], lambda r, served: heard_podgroups.append((r, served)))

    server.by_group_version = installed
    await d.poll()

    assert heard_podsets == podset_changes
    assert heard_podgroups == podgroup_changes
    assert d.has_synced()


async def test_removal_is_heard_by_the_resources_tracker_only() -> None:
    server = ServedResources()
    d = discovery(server)
    heard_podsets: list[tuple[Resource, bool]] = []
    heard_podgroups: list[tuple[Resource, bool]] = []
    d.track([PODSETS], lambda r, served: heard_podsets.append((r, served)))
    d.track([PODGROUPS], lambda r, served: heard_podgroups.append((r, served)))
    server.by_group_version = {"scheduling.x-k8s.io/v1alpha1": {"podgroups"}}
    await d.poll()

    server.by_group_version = {}
    await d.poll()

    assert heard_podsets == []
    assert heard_podgroups == [(PODGROUPS, True), (PODGROUPS, False)]
    assert not d.served(PODGROUPS) and not d.served(PODSETS)
