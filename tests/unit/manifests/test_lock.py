"""The lock files the image installs with `pip --require-hashes` pin, with hashes, a version of
every dependency pyproject.toml declares that pyproject accepts: a dependency added or bumped
without `make lock` fails here, not in a Docker build. Whether the hashes cover the Linux wheels
is checked against PyPI by `make lock-check`."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def parse_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """The pins of a hashed requirements file, and what in it is not `name==version --hash=...`."""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        entry = line.split(" #", 1)[0].strip()
        if not entry or entry.startswith("#"):
            continue
        words = entry.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words[1:] if w.startswith("--hash="))
        others = [w for w in words[1:] if not w.startswith("--hash=")]
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", words[0])
        if match is None or others:
            problems.append(f"{entry[:80]}: not an exact pin `name==version`")
            continue
        bad = [h for h in hashes if not re.fullmatch(r"sha256:[0-9a-f]{64}", h)]
        if not hashes or bad:
            problems.append(f"{words[0]}: no sha256 hash, or a malformed one {bad}")
        pins[canonicalize_name(match.group(1))] = Pin(Version(match.group(2)), hashes)
    return pins, problems


def unmet(requirements: list[str], pins: dict[str, Pin]) -> list[str]:
    """The requirements the lock does not pin, or pins at a version they refuse."""
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement.name} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement.name}=={pin.version} is outside {requirement.specifier}")
    return problems


LOCKS = [
    pytest.param(RUNTIME_LOCK, PYPROJECT["project"]["dependencies"], id="runtime"),
    pytest.param(BUILD_LOCK, PYPROJECT["build-system"]["requires"], id="build"),
]


@pytest.mark.parametrize(("lock", "requirements"), LOCKS)
def test_every_line_of_the_lock_is_an_exact_pin_with_hashes(lock: Path, requirements: list[str]) -> None:
    pins, problems = parse_lock(lock.read_text())
    assert problems == []
    assert len(pins) >= len(requirements)


@pytest.mark.parametrize(("lock", "requirements"), LOCKS)
def test_the_lock_pins_every_declared_dependency_at_a_version_pyproject_accepts(
    lock: Path, requirements: list[str]
) -> None:
    pins, _ = parse_lock(lock.read_text())
    assert unmet(requirements, pins) == [], "pyproject.toml changed: run `make lock`"


def test_test_and_dev_tools_stay_out_of_the_runtime_lock() -> None:
    pins, _ = parse_lock(RUNTIME_LOCK.read_text())
    tools = {
        canonicalize_name(Requirement(line).name)
        for extra in PYPROJECT["project"]["optional-dependencies"].values()
        for line in extra
    }
    assert sorted(tools & set(pins)) == []


HASH = "--hash=sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("orjson>=3.10 \\\n    " + HASH + "\n", "not an exact pin"),
        ("orjson==3.13.0\n", "no sha256 hash"),
        ("orjson==3.13.0 \\\n    --hash=sha256:abc\n", "malformed"),
        ("orjson==3.13.0 \\\n    --hash=md5:" + "ab" * 16 + "\n", "malformed"),
        ("-e ./vendored/orjson\n", "not an exact pin"),
        ("https://example.com/orjson-3.13.0.tar.gz\n", "not an exact pin"),
    ],
)
def test_a_lock_line_without_a_pin_or_a_hash_is_refused(text: str, problem: str) -> None:
    _, problems = parse_lock("# a header\n" + text)
    assert len(problems) == 1 and problem in problems[0]


def test_a_lock_that_misses_or_contradicts_pyproject_is_refused() -> None:
    pins, problems = parse_lock(
        "pydantic==1.10.0 \\\n    " + HASH + "\n    # via stormservice-controller (pyproject.toml)\n"
        "Orjson==3.13.0 \\\n    " + HASH + "\n"
    )
    assert problems == []
    too_old, missing = unmet(["pydantic>=2.7,<3", "orjson>=3.10", "pyyaml>=6.0"], pins)
    assert too_old.startswith("pydantic==1.10.0 is outside")
    assert missing == "pyyaml is not in the lock"
