"""Zero values and quantities as the API server keeps them (apis.podfields, apis.crdgen.gofields)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from apis.crdgen.gofields import extract, parse_go_types
from apis.podfields import normalize, parse_quantity, pod_spec_fields

GO = """
package v1

type Mode string

type Outer struct {
	Name string `json:"name"`
	Note string `json:"note,omitempty"`
	Count *int32 `json:"count,omitempty"`
	Inner Inner `json:"inner,omitempty"`
	Opt *Inner `json:"opt,omitempty"`
	Items []Inner `json:"items,omitempty"`
	Limits map[string]resource.Quantity `json:"limits,omitempty"`
	Mode Mode `json:"mode,omitempty"`
	Embedded `json:",inline"`
	Hidden string `json:"-"`
}

type Inner struct {
	Flag bool `json:"flag,omitempty"`
	Self *Inner `json:"self,omitempty"`
}

type Embedded struct {
	Extra string `json:"extra,omitempty"`
}
"""


def test_parser_reads_pointers_kinds_and_inlined_fields() -> None:
    pkg = parse_go_types(GO)
    assert set(pkg.structs) == {"Outer", "Inner", "Embedded"}
    assert pkg.named["Mode"] == "string"


def test_extracted_fields_of_the_committed_table() -> None:
    fields = pod_spec_fields()
    assert fields["EnvVar"]["value"] == {"ptr": False, "kind": "scalar"}
    assert fields["SecurityContext"]["runAsUser"] == {"ptr": True, "kind": "scalar"}
    assert fields["Container"]["resources"] == {
        "ptr": False,
        "kind": "struct",
        "elem": "ResourceRequirements",
    }
    assert fields["Volume"]["emptyDir"]["ptr"] is True
    assert fields["ResourceRequirements"]["limits"] == {"ptr": False, "kind": "map", "elem": "quantity"}
    # VolumeSource is inlined into Volume, as encoding/json does.
    assert "VolumeSource" in fields and "secret" in fields["Volume"]
    assert fields["PodAffinityTerm"]["labelSelector"] == {
        "ptr": True,
        "kind": "struct",
        "elem": "LabelSelector",
    }


TYPES = {
    "Outer": {
        "name": {"ptr": False, "kind": "scalar"},
        "note": {"ptr": False, "kind": "scalar"},
        "count": {"ptr": True, "kind": "scalar"},
        "inner": {"ptr": False, "kind": "struct", "elem": "Inner"},
        "opt": {"ptr": True, "kind": "struct", "elem": "Inner"},
        "items": {"ptr": False, "kind": "list", "elem": "Inner"},
        "limits": {"ptr": False, "kind": "map", "elem": "quantity"},
    },
    "Inner": {
        "flag": {"ptr": False, "kind": "scalar"},
        "self": {"ptr": True, "kind": "struct", "elem": "Inner"},
    },
}


def test_extract_matches_the_hand_written_table() -> None:
    got = extract(
        GO.replace("package v1", 'package v1\n\ntype PodSpec struct {\n\tO Outer `json:"o"`\n}'), ""
    )
    assert got["Inner"] == TYPES["Inner"]
    outer = {k: v for k, v in got["Outer"].items() if k not in ("mode", "extra")}
    assert outer == TYPES["Outer"]
    assert got["Outer"]["mode"] == {"ptr": False, "kind": "scalar"}
    assert got["Outer"]["extra"] == {"ptr": False, "kind": "scalar"}  # inlined
    assert "Hidden" not in got["Outer"] and "-" not in got["Outer"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"name": "", "note": ""}, {}),
        ({"count": 0}, {"count": 0}),  # a pointer keeps its zero
        ({"count": None}, {}),
        ({"inner": {"flag": False}}, {}),  # a struct of zero values is the zero value
        ({"inner": {"flag": True}}, {"inner": {"flag": True}}),
        ({"opt": {}}, {"opt": {}}),  # a pointer to an empty struct is set
        ({"opt": {"flag": False, "self": {}}}, {"opt": {"self": {}}}),
        ({"items": []}, {}),
        ({"items": [{"flag": False}, {"flag": True}]}, {"items": [{}, {"flag": True}]}),
        (
            {"limits": {"cpu": "0.5", "memory": "1Gi"}},
            {"limits": {"cpu": Fraction(1, 2), "memory": Fraction(2**30)}},
        ),
        ({"limits": {}}, {}),
        ({"unknown": ""}, {"unknown": ""}),  # not ours to judge
    ],
)
def test_normalize(value: dict[str, Any], expected: dict[str, Any]) -> None:
    assert normalize(value, "Outer", TYPES) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1Gi", Fraction(2**30)),
        ("1G", Fraction(10**9)),
        ("2e3", Fraction(2000)),
        ("1E3", Fraction(1000)),  # exponent, not exa
        ("1E", Fraction(10**18)),  # exa
        ("-1", Fraction(-1)),
        ("+100n", Fraction(1, 10**7)),
        (4, Fraction(4)),
        (0.25, Fraction(1, 4)),
        ("16Gx", None),
        ("", None),
        (True, None),
    ],
)
def test_parse_quantity(text: Any, value: Fraction | None) -> None:
    assert parse_quantity(text) == value
