"""Job forms are derived from config models: widgets, defaults, bounds and help text."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.forms import form_fields, values_to_config
from workers.healthcheck import HealthcheckConfig


class Example(BaseModel):
    steps: int = Field(default=3, ge=1, le=9, description="how many")
    rate: float = Field(default=0.5, gt=0, description="how fast")
    mode: Literal["a", "b"] = "b"
    name: str | None = None
    flag: bool = True


def test_fields_follow_the_model():
    fields = {f.name: f for f in form_fields(Example)}
    assert fields["steps"].widget == "integer" and (
        fields["steps"].minimum,
        fields["steps"].maximum,
    ) == (1, 9)
    assert fields["steps"].help == "how many" and fields["steps"].default == 3
    assert fields["rate"].widget == "number" and fields["rate"].minimum == 0
    assert fields["mode"].widget == "dropdown" and fields["mode"].choices == ("a", "b")
    assert fields["name"].widget == "text" and fields["name"].optional
    assert fields["flag"].widget == "checkbox"


def test_values_become_a_config_that_validates():
    fields = form_fields(Example)
    config = values_to_config(fields, (4.0, 0.25, "a", "", False))
    assert config == {"steps": 4, "rate": 0.25, "mode": "a", "flag": False}
    assert Example.model_validate(config).steps == 4


def test_healthcheck_form_matches_its_config():
    names = [f.name for f in form_fields(HealthcheckConfig)]
    assert names == list(HealthcheckConfig.model_fields)
