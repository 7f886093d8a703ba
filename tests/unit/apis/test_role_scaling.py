"""The model side of the role scaling fields: the same rules as the CRD's CEL, with its messages."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import pytest
from pydantic import ValidationError

from apis.v1alpha1 import RoleScaler, StormService
from apis.v1alpha1 import rules as r
from apis.v1alpha1.types import parse_ratio
from tests.unit.apis import cases


def pooled(**decode: Any) -> dict[str, Any]:
    obj = cases.minimal_storm_service()
    obj["spec"]["template"]["spec"]["roles"][1].update(decode)
    return obj


def test_external_scaling_with_a_band_is_accepted_in_pooled_mode() -> None:
    band = {"follows": "prefill", "minRatio": "1.5", "maxRatio": "3"}
    model = StormService.model_validate(pooled(scaling="External", scalingBand=band))
    decode = model.spec.template.spec.roles[1]
    assert decode.scaling == "External"
    assert decode.scaling_band is not None
    assert parse_ratio(decode.scaling_band.min_ratio or "") == Fraction(3, 2)


def test_absent_scaling_is_todays_behaviour() -> None:
    role = StormService.model_validate(cases.minimal_storm_service()).spec.template.spec.roles[0]
    assert role.scaling is None and role.scaling_band is None


@pytest.mark.parametrize(
    ("spec_replicas", "decode", "message"),
    [
        (3, {"scaling": "External"}, r.MSG_EXTERNAL_SCALING_POOLED),
        (0, {"scaling": "External"}, r.MSG_EXTERNAL_SCALING_POOLED),
        (1, {"scalingBand": {"follows": "prefill", "maxRatio": "2"}}, r.MSG_SCALING_BAND_NEEDS_EXTERNAL),
        (
            1,
            {"scaling": "External", "scalingBand": {"follows": "decode", "maxRatio": "2"}},
            r.MSG_SCALING_BAND_FOLLOWS,
        ),
        (
            1,
            {"scaling": "External", "scalingBand": {"follows": "router", "maxRatio": "2"}},
            r.MSG_SCALING_BAND_FOLLOWS,
        ),
        (1, {"scaling": "External", "scalingBand": {"follows": "prefill"}}, r.MSG_SCALING_BAND_BOUNDS),
        (
            1,
            {
                "scaling": "External",
                "scalingBand": {"follows": "prefill", "minRatio": "3", "maxRatio": "1.5"},
            },
            r.MSG_SCALING_BAND_BOUNDS,
        ),
        (
            1,
            {"scaling": "External", "scalingBand": {"follows": "prefill", "maxRatio": "1.2345"}},
            r.MSG_RATIO,
        ),
        (1, {"scaling": "External", "scalingBand": {"follows": "prefill", "maxRatio": "150%"}}, r.MSG_RATIO),
    ],
)
def test_invalid_scaling_is_refused_with_the_crds_message(
    spec_replicas: int, decode: dict[str, Any], message: str
) -> None:
    obj = pooled(**decode)
    obj["spec"]["replicas"] = spec_replicas
    with pytest.raises(ValidationError, match=re.escape(message)):
        StormService.model_validate(obj)


def test_a_band_may_not_follow_a_role_that_follows() -> None:
    obj = pooled(scaling="External", scalingBand={"follows": "prefill", "maxRatio": "2"})
    prefill = obj["spec"]["template"]["spec"]["roles"][0]
    prefill.update(scaling="External", scalingBand={"follows": "decode", "maxRatio": "2"})
    with pytest.raises(ValidationError, match=re.escape(r.MSG_SCALING_BAND_FOLLOWS)):
        StormService.model_validate(obj)


def test_role_scaler_round_trips() -> None:
    wire = {
        "apiVersion": "orchestration.aibrix.ai/v1alpha1",
        "kind": "RoleScaler",
        "metadata": {"name": "llama-decode"},
        "spec": {"replicas": 4, "stormServiceName": "llama", "roleName": "decode"},
        "status": {"replicas": 3, "selector": "storm-service-name=llama,role-name=decode"},
    }
    model = RoleScaler.model_validate(wire)
    assert model.spec.replicas == 4 and model.status is not None and model.status.replicas == 3
