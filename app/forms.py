"""Job forms generated from job config models: the model's defaults and field descriptions
*are* the form, and submitting validates through the same model the CLI and API use.

Nested config models (``data.benchmark``, ``tiny``, ``eval``, …) become sections of dotted
fields, so a validation error's location (``data.benchmark.n_train``) names the very widget to
fix. Lists, dicts and optional nested models are JSON text boxes with the default filled in.
Fields that point at something in the database — runs, checkpoints, problem sets — are
dropdowns (``picker``) whose choices the dashboard fills from queries.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr
from pydantic import BaseModel, ValidationError

Widget = Literal["checkbox", "integer", "number", "dropdown", "text", "json", "picker"]

# Leaf field name → the picker that lists its candidates (see app.views.picker_choices).
PICKERS: dict[str, str] = {
    "sft_run_id": "sft-runs",
    "sft_run_ids": "sft-runs",
    "policy_run_id": "policy-runs",
    "rl_run_id": "rl-runs",
    "prm_run_id": "prm-runs",
    "dataset_run_id": "dataset-runs",
    "problem_set": "problem-sets",
    "policy": "policy-checkpoints",
    "init_from": "policy-checkpoints",
    "resume_from": "policy-checkpoints",
    "checkpoints": "policy-checkpoints",
    "prm": "prm-checkpoints",
    "dataset_path": "prm-datasets",
}


class FormValueError(ValueError):
    """Form values that cannot become a config (e.g. malformed JSON); one line per field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class FormField:
    name: str  # dotted path in the config: "data.benchmark.n_train"
    label: str
    help: str
    widget: Widget
    default: Any
    choices: tuple[Any, ...] = ()
    optional: bool = False
    picker: str | None = None
    multiple: bool = False  # a picker for a list field

    @property
    def section(self) -> str:
        """The dotted path of the nested model this field belongs to ("" at the top)."""
        return self.name.rpartition(".")[0]


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _range_text(metadata: list[Any]) -> str:
    """The field's bounds for its help text, e.g. " [≥ 1, ≤ 1000]". The model enforces them
    (so the error names the field); a bounded number box would refuse with a nameless one."""
    parts = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(getattr(item, attr, None), int | float):
                parts.append(f"{sign} {getattr(item, attr)}")
    return f" [{', '.join(parts)}]" if parts else ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _widget(annotation: Any) -> tuple[Widget, tuple[Any, ...]]:
    if annotation is bool:
        return "checkbox", ()
    if annotation is int:
        return "integer", ()
    if annotation is float:
        return "number", ()
    if typing.get_origin(annotation) is Literal:
        return "dropdown", typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "dropdown", tuple(member.value for member in annotation)
    if annotation is str:
        return "text", ()
    return "json", ()  # lists, dicts, optional nested models


def _json_default(default: Any) -> str:
    if default is None:
        return ""
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    return json.dumps(default)


def form_fields(
    model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
) -> list[FormField]:
    """The form of ``model``: one field per leaf, nested models flattened to dotted names.
    A nested model's defaults come from its parent's default instance (``rerank.pool`` is
    not a default ``EvalConfig``)."""
    fields = []
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = info.get_default(call_default_factory=True)
        if _is_model(annotation) and not optional:
            fields += form_fields(annotation, f"{prefix}{name}.", default)
            continue
        widget, choices = _widget(annotation)
        if isinstance(default, enum.Enum):
            default = default.value
        picker = PICKERS.get(name)
        multiple = typing.get_origin(annotation) is list
        if picker:
            widget = "picker"
        elif widget == "json":
            default = _json_default(default)
        elif widget in ("integer", "number") and optional:
            # a number box cannot be empty (Gradio shows and sends 0): text, parsed by the model
            widget, default = "text", "" if default is None else str(default)
        help_text = (info.description or "") + _range_text(info.metadata)
        if widget == "json":
            help_text += " (JSON" + ("; empty: none)" if optional else ")")
        elif optional and widget == "text":
            help_text += " (empty: none)"
        fields.append(
            FormField(
                name=f"{prefix}{name}",
                label=f"{prefix}{name}".replace("_", " "),
                help=help_text,
                widget=widget,
                default=default,
                choices=choices,
                optional=optional,
                picker=picker,
                multiple=multiple,
            )
        )
    return fields


def render_field(field: FormField, elem_id: str | None = None) -> gr.components.Component:
    common = {"label": field.label, "info": field.help or None, "elem_id": elem_id}
    if field.widget == "checkbox":
        return gr.Checkbox(value=bool(field.default), **common)
    if field.widget in ("integer", "number"):
        return gr.Number(
            value=field.default, precision=0 if field.widget == "integer" else None, **common
        )
    if field.widget == "dropdown":
        return gr.Dropdown(choices=list(field.choices), value=field.default, **common)
    if field.widget == "picker":
        return gr.Dropdown(
            choices=[],
            value=field.default,
            multiselect=field.multiple,
            allow_custom_value=True,
            **common,
        )
    return gr.Textbox(value="" if field.default is None else str(field.default), **common)


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[leaf] = value


def _value(field: FormField, value: Any) -> Any:
    """A widget's value as the config wants it; raises ValueError for malformed JSON."""
    if field.widget == "json":
        return json.loads(value)
    if field.widget == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def values_to_config(fields: list[FormField], values: tuple[Any, ...]) -> dict[str, Any]:
    """Form values to a raw (nested) config dict. An emptied field means None when the field
    is optional and the model default otherwise; malformed JSON raises ``FormValueError``
    naming every such field."""
    config: dict[str, Any] = {}
    errors = []
    for field, value in zip(fields, values, strict=True):
        if value is None or value == "" or value == []:
            if field.optional:
                _set(config, field.name, None)
            continue
        try:
            _set(config, field.name, _value(field, value))
        except json.JSONDecodeError as error:
            errors.append(f"{field.name}: not valid JSON ({error.msg}, column {error.colno})")
    if errors:
        raise FormValueError(errors)
    return config


def field_messages(
    model: type[BaseModel], fields: list[FormField], values: tuple[Any, ...]
) -> list[str]:
    """Per field, the validation message that belongs next to its widget ("" when fine).
    Errors about the whole config (a rule across fields) name no widget; the launch outcome
    lists those."""
    try:
        model.model_validate(values_to_config(fields, values))
    except FormValueError as error:
        by_field = dict(line.split(": ", 1) for line in error.errors)
    except ValidationError as error:
        by_field = {}
        for item in error.errors():
            dotted = ".".join(str(part) for part in item["loc"])
            by_field.setdefault(dotted, item["msg"])
    else:
        return [""] * len(fields)
    messages = []
    for field in fields:
        found = [
            msg
            for loc, msg in by_field.items()
            if loc == field.name or loc.startswith(field.name + ".")
        ]
        messages.append(f"{field.name}: {found[0]}" if found else "")
    return messages


def _subsections(fields: list[FormField], section: str) -> list[str]:
    """The nested models directly inside ``section``, in field order."""
    depth = section.count(".") + 1 if section else 0
    found: list[str] = []
    for field in fields:
        parts = field.section.split(".") if field.section else []
        inside = field.section == section or field.section.startswith(section + ".")
        if len(parts) > depth and (not section or inside):
            child = ".".join(parts[: depth + 1])
            if child not in found:
                found.append(child)
    return found


def _render_section(
    fields: list[FormField], section: str, id_prefix: str, made: dict[str, Any]
) -> None:
    for field in fields:
        if field.section == section:
            slug = field.name.replace(".", "-").replace("_", "-")
            made[field.name] = render_field(field, elem_id=f"{id_prefix}-{slug}")
    for child in _subsections(fields, section):
        with gr.Accordion(child, open=False):
            _render_section(fields, child, id_prefix, made)


def render_form(fields: list[FormField], id_prefix: str) -> list[gr.components.Component]:
    """Widgets for ``fields``: top-level ones first, each nested model in a collapsed
    accordion named by its dotted path. Returned in ``fields`` order (the values order)."""
    made: dict[str, Any] = {}
    _render_section(fields, "", id_prefix, made)
    return [made[field.name] for field in fields]
