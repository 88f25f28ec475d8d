"""The per-line heatmap: colours follow the scores, user text is escaped, markers land on the
right lines, and syntax highlighting never shifts lines."""

from __future__ import annotations

import re

import pytest

from app.heatmap import (
    GREEN,
    RED,
    HeatLine,
    first_negative,
    heatmap_html,
    highlighted_lines,
    score_colour,
)


def rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*colour)


def rows(html_text: str) -> dict[int, str]:
    """Each table row's HTML by its data-line."""
    found = re.findall(r'(<tr id="[^"]*" class="prm-line" data-line="(\d+)".*?</tr>)', html_text)
    return {int(line): row for row, line in found}


def test_the_scale_is_red_white_green_and_clamped():
    assert score_colour(-1.0) == rgb(RED)
    assert score_colour(0.0) == "rgb(255, 255, 255)"
    assert score_colour(1.0) == rgb(GREEN)
    assert score_colour(-7.0) == score_colour(-1.0) and score_colour(3.0) == score_colour(1.0)
    assert score_colour(None) == "transparent"
    half = score_colour(-0.5)
    assert half == "rgb({}, {}, {})".format(*(round((255 + c) / 2) for c in RED))


def test_code_and_details_are_escaped():
    lines = [
        HeatLine(1, '    s = "<script>alert(1)</script>" & x', 0.4),
        HeatLine(2, '    return a < b and b > c  # it\'s "fine"', -0.6),
    ]
    for highlight in (True, False):
        out = heatmap_html(
            lines,
            error_line=2,
            detail='AssertionError: <img src=x onerror="boom">',
            highlight_code=highlight,
        )
        assert "<script>" not in out and "<img" not in out
        assert "&lt;script&gt;" in out and "&amp;" in out and "&lt;img" in out
        assert 'onerror="boom"' not in out


def test_rows_carry_scores_labels_and_colours():
    lines = [
        HeatLine(1, "    x = xs[0]", 0.9, 1, 1, 0.02),
        HeatLine(2, "    # a comment", -0.8, 0, 0, None),
        HeatLine(3, "    y = x - 1", -0.25, -1, 1, -0.01),
        HeatLine(4, "    return y", None, -1, -1, None),
    ]
    out = heatmap_html(lines, error_line=4, detail="boom", element_id="heatmap-7")
    by_line = rows(out)
    assert sorted(by_line) == [1, 2, 3, 4]
    for line in lines:
        row = by_line[line.line_no]
        assert f'id="heatmap-7-line-{line.line_no}"' in row
        assert f"background-color:{score_colour(line.score)}" in row
        if line.score is not None:
            assert f'data-score="{line.score}"' in row
            assert f'title="PRM score {line.score:+.4f}"' in row
        else:
            assert "data-score" not in row
    assert 'data-label="-1" data-ground-truth="1" data-dense-reward="-0.01"' in by_line[3]
    # the comment line scores lower but is neutral: the first negative *code* line is 3
    assert 'data-first-negative="3"' in out and "mark-first-negative" in by_line[3]
    assert "mark-first-negative" not in by_line[2]
    assert "mark-error" in by_line[4] and "boom" in by_line[4]
    assert "PRM score" in out and "−1" in out  # the legend


def test_first_negative_skips_blank_and_comment_lines():
    lines = [HeatLine(1, "", -1.0), HeatLine(2, "  # no", -1.0), HeatLine(3, "  x = 1", 0.2)]
    assert first_negative(lines) is None
    assert first_negative([*lines, HeatLine(4, "  y = 2", -0.01)]) == 4


@pytest.mark.parametrize(
    "texts",
    [
        ['    s = """a', "    <b> & c", '    """', "    return s"],
        ["    x = 1", "", "", "    return x"],
        ["\tif x:", "\t\treturn '<'"],
    ],
)
def test_highlighting_keeps_one_piece_per_line(texts):
    pieces = highlighted_lines(texts)
    assert len(pieces) == len(texts)
    for piece in pieces:
        assert piece.count("<span") == piece.count("</span>")
        assert "<b>" not in piece


def test_empty_response():
    assert "no lines" in heatmap_html([])
