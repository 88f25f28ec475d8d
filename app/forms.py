"""Job forms generated from job config models: the model's defaults and field descriptions
*are* the form, and submitting validates through the same model the CLI and API use."""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import gradio as gr
from pydantic import BaseModel

Widget = Literal["checkbox", "integer", "number", "dropdown", "text"]


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    help: str
    widget: Widget
    default: Any
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = float(getattr(item, "ge", getattr(item, "gt", None)))
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = float(getattr(item, "le", getattr(item, "lt", None)))
    return low, high


def form_fields(model: type[BaseModel]) -> list[FormField]:
    fields = []
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        low, high = _bounds(info.metadata)
        choices: tuple[Any, ...] = ()
        if annotation is bool:
            widget: Widget = "checkbox"
        elif annotation is int:
            widget = "integer"
        elif annotation is float:
            widget = "number"
        elif typing.get_origin(annotation) is Literal:
            widget, choices = "dropdown", typing.get_args(annotation)
        elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            widget, choices = "dropdown", tuple(member.value for member in annotation)
        else:
            widget = "text"
        default = info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        fields.append(
            FormField(
                name=name,
                label=name.replace("_", " "),
                help=info.description or "",
                widget=widget,
                default=default,
                choices=choices,
                minimum=low,
                maximum=high,
                optional=optional,
            )
        )
    return fields


def render_field(field: FormField) -> gr.components.Component:
    common = {"label": field.label, "info": field.help or None}
    if field.widget == "checkbox":
        return gr.Checkbox(value=bool(field.default), **common)
    if field.widget in ("integer", "number"):
        return gr.Number(
            value=field.default,
            precision=0 if field.widget == "integer" else None,
            minimum=field.minimum,
            maximum=field.maximum,
            **common,
        )
    if field.widget == "dropdown":
        return gr.Dropdown(choices=list(field.choices), value=field.default, **common)
    return gr.Textbox(value="" if field.default is None else str(field.default), **common)


def values_to_config(fields: list[FormField], values: tuple[Any, ...]) -> dict[str, Any]:
    """Form values to a raw config dict; empty optional fields become None (model default)."""
    config: dict[str, Any] = {}
    for field, value in zip(fields, values, strict=True):
        if value is None or (value == "" and field.widget == "text" and field.optional):
            continue
        if field.widget == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        config[field.name] = value
    return config
