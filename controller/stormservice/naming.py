"""Names and indexes of the RoleSets a StormService creates."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from apis.v1alpha1.constants import MAX_ROLE_SET_NAME_LENGTH

#: Longest name of an object the StormService owns besides RoleSets (a DNS label).
MAX_OBJECT_NAME_LENGTH = 63
_DIGEST_LENGTH = 8
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


def shorten_name(head: str, tail: str, limit: int = MAX_OBJECT_NAME_LENGTH) -> str:
    """`head + tail` if it fits in `limit`. Otherwise the head is cut and a digest of the whole
    name takes the cut part's place, keeping the tail (what tells sibling objects apart), so two
    long names that differ anywhere stay different (much as the RoleSet controller shortens pod
    names)."""
    full = head + tail
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_DIGEST_LENGTH]
    room = limit - len(tail) - _DIGEST_LENGTH - 1
    if room >= 0:
        cut = head[:room].rstrip("-.")
        return f"{cut}-{digest}{tail}" if cut else f"{digest}{tail}"
    # The tail alone is too long (only for names from before admission limited them): keep its end.
    return f"{digest}-{tail[-(limit - _DIGEST_LENGTH - 1) :].lstrip('-.')}"


def pdb_name(storm_service: str, role: str) -> str:
    """`<ss>-<role>`: the PodDisruptionBudget of one role across all the StormService's RoleSets."""
    return shorten_name(storm_service, f"-{role}")


def role_service_name(storm_service: str, role: str) -> str:
    """`<ss>-<role>`: the Service of one role across all the StormService's RoleSets. With the
    names admission allows it keeps the StormService name's first letter whatever is cut, so it
    stays a DNS-1035 label, as a Service name must be."""
    return shorten_name(storm_service, f"-{role}")


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
