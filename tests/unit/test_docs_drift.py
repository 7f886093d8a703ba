"""README's Metrics and Events tables name exactly what the controller exports and emits, so the
docs cannot drift from the code."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import controller.roleset.metrics
import controller.runtime.events
import controller.runtime.leaderelection
import controller.stormservice.metrics  # noqa: F401 (registers its metrics)
from controller.runtime.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

#: Source packages whose `recorder.event(...)` calls record on objects of this kind.
EVENT_SOURCES = {"controller/stormservice": "StormService", "controller/roleset": "RoleSet"}
#: Reasons recorded on another kind than their package's (the StormService controller's
#: RoleScalers).
OTHER_KIND_REASONS = {"OutsideRatioBand": "RoleScaler"}
#: prometheus-client's process and runtime collectors: one group line in the table.
DEFAULT_COLLECTOR_PREFIXES = ("process_", "python_")


def section(title: str) -> str:
    start = README.index(f"\n### {title}\n")
    end = README.find("\n### ", start + 1)
    return README[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| ---"):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) from the Metrics table (group lines have no type)."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name_cell, type_, labels, _ in table_rows(section("Metrics")):
        if not type_:
            continue
        (name,) = ticked(name_cell)
        out[name] = (type_, tuple(ticked(labels)))
    return out


def exported_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in list(REGISTRY._collector_to_names):
        for family in getattr(collector, "describe", collector.collect)():
            if family.name.startswith(DEFAULT_COLLECTOR_PREFIXES):
                continue
            name = family.name + ("_total" if family.type == "counter" else "")
            # A metric wrapper declares its labels; a custom collector's family does.
            labels = getattr(collector, "_labelnames", ()) or getattr(family, "_labelnames", ())
            out[name] = (family.type, tuple(str(label) for label in labels))
    return out


def test_the_metrics_table_is_every_registered_metric_with_its_type_and_labels() -> None:
    exported = exported_metrics()
    assert len(exported) > 25  # the registry was found
    assert documented_metrics() == exported


def test_the_metrics_table_mentions_the_default_collectors() -> None:
    names = [ticked(row[0]) for row in table_rows(section("Metrics"))]
    assert ["process_*", "python_*"] in names
    families = {f.name for f in REGISTRY.collect()}
    assert any(n.startswith("process_") for n in families) or any(n.startswith("python_") for n in families)


def emitted_events() -> set[tuple[str, str, str]]:
    """(reason, type, kind) of every `<recorder>.event(obj, type, reason, message)` call, with
    the type and reason evaluated in the calling module (constants, literals, L.X, c.X)."""
    found: set[tuple[str, str, str]] = set()
    for package, kind in EVENT_SOURCES.items():
        for path in sorted((ROOT / package).glob("*.py")):
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for node in ast.walk(ast.parse(path.read_text())):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "event"
                    and len(node.args) == 4
                ):
                    continue
                type_, reason = (
                    eval(compile(ast.Expression(arg), str(path), "eval"), vars(module))
                    for arg in node.args[1:3]
                )
                found.add((reason, type_, OTHER_KIND_REASONS.get(reason, kind)))
    return found


def documented_events() -> set[tuple[str, str, str]]:
    return {(ticked(reason)[0], type_, kind) for reason, type_, kind, _ in table_rows(section("Events"))}


def test_the_events_table_is_every_event_the_controllers_emit() -> None:
    emitted = emitted_events()
    assert len(emitted) > 25  # the calls were found
    assert documented_events() == emitted
