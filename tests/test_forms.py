"""Job forms are derived from config models: widgets, defaults, bounds and help text, nested
models as dotted fields, database pickers, and errors that name the dotted field."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from app.forms import (
    FormValueError,
    _subsections,
    field_messages,
    form_fields,
    values_to_config,
)
from workers.healthcheck import HealthcheckConfig
from workers.registry import JOB_KINDS


class Example(BaseModel):
    steps: int = Field(default=3, ge=1, le=9, description="how many")
    rate: float = Field(default=0.5, gt=0, description="how fast")
    mode: Literal["a", "b"] = "b"
    name: str | None = None
    flag: bool = True


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=2, ge=1)
    tags: list[str] = Field(default_factory=lambda: ["x"])


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Inner = Field(default_factory=lambda: Inner(size=5))
    extra: Inner | None = None
    sft_run_id: int | None = None


def test_fields_follow_the_model():
    fields = {f.name: f for f in form_fields(Example)}
    assert fields["steps"].widget == "integer" and fields["steps"].default == 3
    assert fields["steps"].help == "how many [≥ 1, ≤ 9]"
    assert fields["rate"].widget == "number" and fields["rate"].help == "how fast [> 0]"
    assert fields["mode"].widget == "dropdown" and fields["mode"].choices == ("a", "b")
    assert fields["name"].widget == "text" and fields["name"].optional
    assert fields["flag"].widget == "checkbox"


def test_optional_numbers_are_text_so_they_can_be_empty():
    class Budget(BaseModel):
        limit: int | None = Field(default=500, ge=1)
        target: float | None = None

    limit, target = form_fields(Budget)
    assert (limit.widget, limit.default, target.widget, target.default) == (
        "text",
        "500",
        "text",
        "",
    )
    config = values_to_config([limit, target], ("", "0.5"))
    assert Budget.model_validate(config) == Budget(limit=None, target=0.5)


def test_values_become_a_config_that_validates():
    fields = form_fields(Example)
    config = values_to_config(fields, (4.0, 0.25, "a", "", False))
    assert config == {"steps": 4, "rate": 0.25, "mode": "a", "name": None, "flag": False}
    assert Example.model_validate(config).steps == 4


def test_nested_models_become_dotted_fields_with_the_parents_defaults():
    fields = {f.name: f for f in form_fields(Outer)}
    assert list(fields) == ["inner.size", "inner.tags", "extra", "sft_run_id"]
    assert fields["inner.size"].default == 5  # Outer's default Inner, not Inner's own
    assert fields["inner.size"].section == "inner"
    assert fields["inner.tags"].widget == "json" and json.loads(fields["inner.tags"].default) == [
        "x"
    ]
    assert fields["extra"].widget == "json" and fields["extra"].default == ""
    assert fields["sft_run_id"].widget == "picker" and fields["sft_run_id"].picker == "sft-runs"

    config = values_to_config(list(fields.values()), (7, '["a", "b"]', "", 12))
    assert config == {"inner": {"size": 7, "tags": ["a", "b"]}, "extra": None, "sft_run_id": 12}
    assert Outer.model_validate(config).inner.tags == ["a", "b"]


def test_malformed_json_names_the_dotted_field():
    fields = form_fields(Outer)
    with pytest.raises(FormValueError) as caught:
        values_to_config(fields, (7, "[oops", "", None))
    assert caught.value.errors[0].startswith("inner.tags: not valid JSON")


def test_validation_messages_land_on_the_nested_widget():
    fields = form_fields(Outer)
    messages = field_messages(Outer, fields, (0, "[]", '{"size": 1, "bogus": 2}', None))
    by_name = dict(zip([f.name for f in fields], messages, strict=True))
    assert (
        by_name["inner.size"].startswith("inner.size: ")
        and "greater than" in (by_name["inner.size"])
    )
    assert by_name["extra"].startswith("extra: ")  # extra.bogus is not permitted
    assert by_name["inner.tags"] == "" and by_name["sft_run_id"] == ""
    assert field_messages(Outer, fields, (3, "[]", "", None)) == ["", "", "", ""]


def test_healthcheck_form_matches_its_config():
    names = [f.name for f in form_fields(HealthcheckConfig)]
    assert names == list(HealthcheckConfig.model_fields)


# the least each kind needs besides its defaults (a policy, a dataset, …)
REQUIRED = {
    "eval": {"policy": "p"},
    "rl": {"policy": "p", "prm": "q"},
    "prm-data": {"checkpoints": ["p"]},
    "prm-train": {"dataset_path": "d", "init_from": "p"},
}


@pytest.mark.parametrize("kind", sorted(JOB_KINDS))
def test_an_untouched_form_submits_the_models_defaults(kind):
    """Nested sections, JSON boxes, optional numbers as text, empty pickers: submitting the
    form as rendered validates to exactly the default config."""
    model = JOB_KINDS[kind].config
    fields = form_fields(model)
    config = values_to_config(fields, tuple(f.default for f in fields))
    required = REQUIRED.get(kind, {})
    submitted = model.model_validate({**config, **required})
    assert submitted == model.model_validate(required)


def test_sections_nest_in_field_order():
    fields = form_fields(JOB_KINDS["prm-train"].config)
    assert _subsections(fields, "") == ["data", "rerank"]
    assert _subsections(fields, "rerank") == ["rerank.pool"]
    assert _subsections(fields, "data") == ["data.benchmark"]
