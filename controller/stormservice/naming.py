"""Names and indexes of the RoleSets a StormService creates."""

from __future__ import annotations

from collections.abc import Iterable

from apis.v1alpha1.constants import MAX_ROLE_SET_NAME_LENGTH

#: The API server appends this many random characters to a generateName.
GENERATED_SUFFIX_LENGTH = 5
ROLESET_INFIX = "-roleset-"


def roleset_generate_name(storm_service: str) -> str:
    """`<ss>-roleset-`, with the StormService part cut so that the generated name fits in 63
    characters (it is the `roleset-name` pod label). Admission keeps StormService names short
    enough; the cut only matters for objects created before that rule."""
    room = MAX_ROLE_SET_NAME_LENGTH - GENERATED_SUFFIX_LENGTH - len(ROLESET_INFIX)
    base = storm_service[:room].rstrip("-.")
    return f"{base}{ROLESET_INFIX}"


def lowest_free_indexes(used: Iterable[int | None], count: int) -> list[int]:
    """The `count` smallest non-negative integers not in `used`: each new RoleSet takes the
    lowest `roleset-index` no existing RoleSet of the StormService holds (the reference restarted
    at 0 for every batch, so indexes repeated)."""
    taken = {i for i in used if i is not None}
    free: list[int] = []
    candidate = 0
    while len(free) < count:
        if candidate not in taken:
            free.append(candidate)
        candidate += 1
    return free
