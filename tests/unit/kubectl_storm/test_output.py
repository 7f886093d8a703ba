"""`-o yaml` output must read back with the same types in kubectl (YAML 1.2), not only in PyYAML."""

from __future__ import annotations

import json

import pytest
import yaml

from controller.kubectl_storm.output import render, to_yaml

# Strings a YAML 1.2 reader (kubectl, kustomize) would take for numbers, booleans or null if left
# unquoted; the first ones are those PyYAML's YAML 1.1 resolver leaves bare.
NUMBER_LIKE = [
    "-123e45",
    "1e3",
    "0o17",
    "+12",
    "12",
    "0x1F",
    ".5",
    "1.",
    ".inf",
    "-.Inf",
    ".NaN",
    "true",
    "null",
    "~",
]
PLAIN = ["abc", "v1.2.3", "1-2", "e5", "0o9", "1e", "prefill-0", "", "a: b"]


@pytest.mark.parametrize("value", NUMBER_LIKE)
@pytest.mark.parametrize("dump", [lambda d: render(d, "yaml"), to_yaml], ids=["render", "to_yaml"])
def test_number_like_strings_are_quoted(value: str, dump: object) -> None:
    text = dump({"label": value})  # type: ignore[operator]
    assert text.strip() != f"label: {value}", text
    assert yaml.safe_load(text) == {"label": value}


@pytest.mark.parametrize("value", PLAIN)
def test_other_strings_read_back_unchanged(value: str) -> None:
    assert yaml.safe_load(render({"label": value}, "yaml")) == {"label": value}


def test_plain_strings_stay_unquoted() -> None:
    assert render({"image": "vllm:v1.2.3", "n": 3}, "yaml") == "image: vllm:v1.2.3\nn: 3"


def test_json_is_unchanged() -> None:
    assert json.loads(render({"label": "-123e45"}, "json")) == {"label": "-123e45"}
