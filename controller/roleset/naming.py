"""Pod and group names: `<rs>-<role>-<hash>-<i>[-<k>]`, shortened to 63 characters.

Shortening keeps the distinguishing tail (hash, index, member) and replaces the cut part of the
head with a digest of the whole head, so two long names that differ only in the cut part stay
different.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 63
# The API server appends 5 random characters to generateName and truncates the base to 58.
MAX_GENERATE_NAME = MAX_NAME - 5
_DIGEST_LEN = 8


def shorten(head: str, tail: str = "", limit: int = MAX_NAME) -> str:
    """`head + tail` if it fits in `limit`; else a cut head, '-', a digest of the head, then tail."""
    if len(head) + len(tail) <= limit:
        return head + tail
    digest = hashlib.sha256(head.encode()).hexdigest()[:_DIGEST_LEN]
    keep = max(0, limit - len(tail) - _DIGEST_LEN - 1)
    cut = head[:keep].rstrip("-.")
    return f"{cut}-{digest}{tail}" if cut else f"{digest}{tail}"[:limit]


def group_name(roleset: str, role: str, template_hash: str, index: int) -> str:
    """Name of pod group `index` (also the stateful pod name): `<rs>-<role>-<hash>-<i>`."""
    return shorten(f"{roleset}-{role}", f"-{template_hash}-{index}")


def group_hash(roleset: str, role: str, group: str, index: int) -> str | None:
    """The template hash group `group` (slot `index`) was named with, or None when `group` is
    not a name `group_name` gives. The tail `-<hash>-<i>` survives shortening."""
    parts = group.rsplit("-", 2)
    if len(parts) != 3 or parts[2] != str(index):
        return None
    h = parts[1]
    return h if h and group_name(roleset, role, h, index) == group else None


def stateful_pod_name(roleset: str, role: str, template_hash: str, index: int) -> str:
    return group_name(roleset, role, template_hash, index)


def member_pod_name(roleset: str, role: str, template_hash: str, index: int, member: int) -> str:
    """Name of member `member` of pod group `index`: `<rs>-<role>-<hash>-<i>-<k>`."""
    return shorten(f"{roleset}-{role}", f"-{template_hash}-{index}-{member}")


def stateless_pod_name(roleset: str, role: str, suffix: str) -> str:
    """`<rs>-<role>-<suffix>`, as the API server would generate it, but chosen here so that the
    pod's hostname can be its name (every pod has a DNS name under the headless Service)."""
    return generate_name(roleset, role) + suffix


def generate_name(roleset: str, role: str) -> str:
    """generateName prefix of stateless pods: `<rs>-<role>-`, cut so the suffix still fits."""
    return shorten(f"{roleset}-{role}", "-", MAX_GENERATE_NAME)


def object_name(roleset: str, suffix: str) -> str:
    """Name of a per-role object (PodDisruptionBudget, PodGroup) owned by a RoleSet."""
    return shorten(roleset, f"-{suffix}") if suffix else shorten(roleset)
