from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.runtime.expectations import EXPECTATIONS_TTL_SECONDS, ControllerExpectations

KEY = "ns/roleset-a"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TTL = EXPECTATIONS_TTL_SECONDS

# A step: ("create", n) expect n creations; ("delete", [keys]) expect deletions; ("created",)
# one creation observed; ("deleted", key) a deletion observed; ("lower", adds, [keys]);
# ("forget",) delete_expectations; ("tick", seconds) advance the clock; ("other", n) expect n
# creations for another controller key; ("unknown", seconds) expire_within.
Step = tuple[object, ...]


@dataclass
class Case:
    name: str
    steps: list[Step]
    satisfied: bool


def _apply(exp: ControllerExpectations, clock: FakeClock, step: Step) -> None:
    op, *args = step
    if op == "create":
        exp.expect_creations(KEY, int(str(args[0])))
    elif op == "delete":
        exp.expect_deletions(KEY, [str(k) for k in args])
    elif op == "created":
        exp.creation_observed(KEY)
    elif op == "deleted":
        exp.deletion_observed(KEY, str(args[0]))
    elif op == "lower":
        exp.lower_expectations(KEY, int(str(args[0])), [str(k) for k in args[1:]])
    elif op == "forget":
        exp.delete_expectations(KEY)
    elif op == "tick":
        clock.now += float(str(args[0]))
    elif op == "unknown":
        exp.expire_within(KEY, float(str(args[0])))
    elif op == "other":
        exp.expect_creations("ns/other", int(str(args[0])))
    else:
        raise AssertionError(op)


CASES = [
    Case("no record", [], True),
    Case("creations pending", [("create", 2)], False),
    Case("zero creations", [("create", 0)], True),
    Case("creations partly observed", [("create", 2), ("created",)], False),
    Case("creations all observed", [("create", 2), ("created",), ("created",)], True),
    Case("more creations observed than expected", [("create", 1), ("created",), ("created",)], True),
    Case("deletions pending", [("delete", "ns/p1", "ns/p2")], False),
    Case(
        "deletion observed twice for the same key counts once",
        [("delete", "ns/p1", "ns/p2"), ("deleted", "ns/p1"), ("deleted", "ns/p1")],
        False,
    ),
    Case(
        "deletion of an unexpected key does not count",
        [("delete", "ns/p1"), ("deleted", "ns/other")],
        False,
    ),
    Case(
        "all deletions observed",
        [("delete", "ns/p1", "ns/p2"), ("deleted", "ns/p2"), ("deleted", "ns/p1")],
        True,
    ),
    Case(
        "creations and deletions both needed",
        [("create", 1), ("delete", "ns/p1"), ("created",)],
        False,
    ),
    Case(
        "creations and deletions both observed",
        [("create", 1), ("delete", "ns/p1"), ("created",), ("deleted", "ns/p1")],
        True,
    ),
    Case("failed creates lowered", [("create", 3), ("created",), ("lower", 2)], True),
    Case("failed creates partly lowered", [("create", 3), ("lower", 2)], False),
    Case(
        "failed deletes lowered",
        [("delete", "ns/p1", "ns/p2"), ("deleted", "ns/p1"), ("lower", 0, "ns/p2")],
        True,
    ),
    Case("expired record is satisfied", [("create", 5), ("tick", TTL + 1)], True),
    Case("record just inside the ttl is not", [("create", 5), ("tick", TTL - 1)], False),
    Case("expired deletions are satisfied", [("delete", "ns/p1"), ("tick", TTL + 1)], True),
    Case(
        "new expectations after expiry start from scratch",
        [("create", 5), ("tick", TTL + 1), ("create", 1), ("created",)],
        True,
    ),
    Case(
        "new expectations refresh the ttl",
        [("create", 5), ("tick", TTL - 1), ("delete", "ns/p1"), ("tick", 2)],
        False,
    ),
    Case(
        "surplus observation does not cancel a later creation",
        [("create", 1), ("created",), ("created",), ("create", 1)],
        False,
    ),
    Case(
        "expectations added while pending accumulate",
        [("create", 1), ("create", 1), ("created",)],
        False,
    ),
    Case("deleted expectations", [("create", 3), ("forget",)], True),
    Case(
        "observations without a record are ignored",
        [("created",), ("deleted", "ns/p1"), ("lower", 1, "ns/p1")],
        True,
    ),
    Case("other keys are independent", [("other", 3), ("create", 1), ("created",)], True),
    Case("an unknown outcome is expected a while", [("create", 1), ("unknown", 30), ("tick", 30)], False),
    Case("then no longer", [("create", 1), ("unknown", 30), ("tick", 30.5)], True),
    Case(
        "never longer than the TTL", [("create", 1), ("tick", TTL - 5), ("unknown", 30), ("tick", 5.5)], True
    ),
    Case("its creation seen", [("create", 1), ("unknown", 30), ("created",)], True),
    Case("on nothing pending", [("unknown", 30)], True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_satisfied(case: Case) -> None:
    clock = FakeClock()
    exp = ControllerExpectations(clock=clock)
    for step in case.steps:
        _apply(exp, clock, step)
    assert exp.satisfied(KEY) is case.satisfied


def test_pending_reports_what_is_outstanding() -> None:
    clock = FakeClock()
    exp = ControllerExpectations(clock=clock)
    assert exp.pending(KEY) is None
    exp.expect_creations(KEY, 2)
    exp.expect_deletions(KEY, ["ns/b", "ns/a"])
    exp.creation_observed(KEY)
    clock.now += 7
    pending = exp.pending(KEY)
    assert pending is not None
    assert (pending.adds, pending.deletes, pending.age_seconds) == (1, ("ns/a", "ns/b"), 7)


def test_custom_ttl() -> None:
    clock = FakeClock()
    exp = ControllerExpectations(ttl=10, clock=clock)
    exp.expect_creations(KEY, 1)
    clock.now += 10
    assert not exp.satisfied(KEY)
    clock.now += 0.5
    assert exp.satisfied(KEY)


def test_expires_in_says_when_to_look_again() -> None:
    clock = FakeClock()
    exp = ControllerExpectations(clock=clock)
    assert exp.expires_in(KEY) is None
    exp.expect_creations(KEY, 2)
    clock.now += 10
    assert exp.expires_in(KEY) == TTL - 10
    exp.expire_within(KEY, 30)
    assert exp.expires_in(KEY) == 30
    clock.now += 31
    assert exp.expires_in(KEY) == 0.0
    exp.creation_observed(KEY)
    exp.creation_observed(KEY)
    assert exp.expires_in(KEY) is None


def test_negative_creations_rejected() -> None:
    with pytest.raises(ValueError):
        ControllerExpectations().expect_creations(KEY, -1)


def test_delete_expectations_forgets_the_key() -> None:
    exp = ControllerExpectations()
    exp.expect_creations(KEY, 1)
    assert len(exp) == 1
    exp.delete_expectations(KEY)
    exp.delete_expectations(KEY)
    assert len(exp) == 0
