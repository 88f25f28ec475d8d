"""The per-line PRM heatmap of a generated program, rendered as an HTML table for ``gr.HTML``.

Each line's background is its PRM score on a diverging scale, red (−1) ↔ white (0) ↔ green
(+1); the score is also in the row's ``data-score`` and the cell's ``title`` (hover). Beside the
code: the binary-search label, the ground-truth label, the dense reward PPO paid, a marker on the
first code line the PRM scores negative, and the sandbox's error line with its reason.

Everything user-controlled — code, error details — is HTML-escaped: generated code routinely
holds ``<``, ``&`` and quotes, and a program printing ``<script>`` must show, not run. Styles are
inline so the table looks the same wherever it is embedded. Row ids and ``data-*`` attributes
are stable: tests and scripts check colours against stored scores through them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from models.lines import is_neutral

RED = (248, 105, 107)
WHITE = (255, 255, 255)
GREEN = (99, 190, 123)
MONO = "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px"


@dataclass(frozen=True)
class HeatLine:
    """One line of a response and what is known about it (None: not recorded)."""

    line_no: int  # 1-based, within the response (the completion, not the prompt)
    text: str
    score: float | None = None
    label: int | None = None
    ground_truth: int | None = None
    dense_reward: float | None = None


def score_colour(score: float | None) -> str:
    """The line's background: white→red below 0, white→green above, clamped to [−1, 1]."""
    if score is None:
        return "transparent"
    s = min(max(float(score), -1.0), 1.0)
    end = RED if s < 0 else GREEN
    t = abs(s)
    r, g, b = (round(w + (e - w) * t) for w, e in zip(WHITE, end, strict=True))
    return f"rgb({r}, {g}, {b})"


def first_negative(lines: Sequence[HeatLine]) -> int | None:
    """The first code line (blank and comment lines skipped, as in PPO and the PRM's
    first-error metric) the PRM scores below 0."""
    for line in lines:
        if line.score is not None and line.score < 0 and not is_neutral(line.text):
            return line.line_no
    return None


def highlighted_lines(texts: Sequence[str]) -> list[str]:
    """Each line as syntax-highlighted, escaped HTML (Pygments escapes ``<``, ``&`` and
    quotes). Pygments closes its spans at every newline, so the output splits into
    self-contained lines; if it ever does not line up, the plain escaped text is used."""
    if not texts:
        return []
    lexer = PythonLexer(stripnl=False, stripall=False, ensurenl=False)
    formatter = HtmlFormatter(nowrap=True, noclasses=True, style="default")
    rendered = highlight("\n".join(texts), lexer, formatter).split("\n")
    if len(rendered) == len(texts) + 1 and not rendered[-1]:
        rendered.pop()  # the formatter ends its output with a newline of its own
    if len(rendered) != len(texts):
        return [html.escape(text) for text in texts]
    return rendered


def legend_html() -> str:
    """A gradient bar with its scale: how to read the colours."""
    gradient = f"linear-gradient(to right, {score_colour(-1)}, {score_colour(0)}, " + (
        f"{score_colour(1)})"
    )
    return (
        '<div class="prm-legend" style="display:flex;align-items:center;gap:8px;'
        'margin:4px 0 8px 0;font-size:12px">'
        "<span>PRM score</span><span>−1</span>"
        f'<span style="display:inline-block;width:220px;height:12px;background:{gradient};'
        'border:1px solid #ccc"></span><span>+1</span>'
        "<span>▶ first negative code line</span><span>✖ sandbox error line</span></div>"
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def _label(value: int | None) -> str:
    return "" if value is None else f"{value:+d}" if value else "0"


def _data(name: str, value: object) -> str:
    return "" if value is None else f' data-{name}="{html.escape(str(value), quote=True)}"'


def _row(
    row_id: str,
    line: HeatLine,
    code_html: str,
    first_bad: int | None,
    error_line: int | None,
    detail: str,
) -> str:
    marks = []
    if line.line_no == first_bad:
        marks.append('<span class="mark-first-negative" title="first negative code line">▶</span>')
    if line.line_no == error_line:
        reason = html.escape(detail or "the failing exception was raised here", quote=True)
        marks.append(f'<span class="mark-error" title="{reason}">✖ {reason}</span>')
    colour = score_colour(line.score)
    hover = "no PRM score" if line.score is None else f"PRM score {line.score:+.4f}"
    cell = "padding:0 6px;border-bottom:1px solid #f0f0f0"
    return (
        f'<tr id="{row_id}" class="prm-line" data-line="{line.line_no}"'
        f"{_data('score', line.score)}{_data('label', line.label)}"
        f"{_data('ground-truth', line.ground_truth)}{_data('dense-reward', line.dense_reward)}>"
        f'<td class="ln" style="{cell};color:#999;text-align:right">{line.line_no}</td>'
        f'<td class="code" style="{cell};background-color:{colour};white-space:pre;{MONO}" '
        f'title="{hover}">{code_html}</td>'
        f'<td class="score" style="{cell};{MONO}">{_number(line.score)}</td>'
        f'<td class="label" style="{cell};text-align:center">{_label(line.label)}</td>'
        f'<td class="ground-truth" style="{cell};text-align:center">'
        f"{_label(line.ground_truth)}</td>"
        f'<td class="dense-reward" style="{cell};{MONO}">{_number(line.dense_reward, 4)}</td>'
        f'<td class="marks" style="{cell};color:#b91c1c;white-space:nowrap">'
        f"{' '.join(marks)}</td></tr>"
    )


def heatmap_html(
    lines: Sequence[HeatLine],
    *,
    error_line: int | None = None,
    detail: str = "",
    element_id: str = "heatmap",
    highlight_code: bool = True,
) -> str:
    """The whole table. ``error_line`` is 1-based within the response, like ``line_no``."""
    if not lines:
        return f'<div id="{html.escape(element_id)}"><em>no lines</em></div>'
    texts = [line.text for line in lines]
    code = highlighted_lines(texts) if highlight_code else [html.escape(t) for t in texts]
    first_bad = first_negative(lines)
    safe_id = html.escape(element_id, quote=True)
    header = "".join(
        f'<th style="text-align:left;padding:2px 6px;border-bottom:1px solid #ccc">{name}</th>'
        for name in ("#", "code", "PRM", "search label", "truth", "dense reward", "")
    )
    rows = "".join(
        _row(f"{safe_id}-line-{line.line_no}", line, code_html, first_bad, error_line, detail)
        for line, code_html in zip(lines, code, strict=True)
    )
    return (
        f'<div id="{safe_id}" class="prm-heatmap"'
        f"{_data('first-negative', first_bad)}{_data('error-line', error_line)}>"
        f"{legend_html()}"
        # a narrow column (side by side) scrolls sideways instead of squeezing the code
        '<div style="overflow-x:auto"><table style="border-collapse:collapse;min-width:100%">'
        f"<thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table></div></div>"
    )
