"""Builders for StormService unit tests."""

from __future__ import annotations

from controller.stormservice.view import RoleSetView


def rs(
    name: str,
    rev: str = "new",
    *,
    ready: bool = True,
    terminating: bool = False,
    created: float = 0.0,
    index: int | None = None,
) -> RoleSetView:
    return RoleSetView(
        name=name,
        revision=rev,
        ready=ready and not terminating,
        updated=True,
        updated_ready=ready and not terminating,
        terminating=terminating,
        created=created,
        index=index,
    )


def names(views: object) -> list[str]:
    return [v.name for v in views]  # type: ignore[attr-defined]
