"""Line segmentation: properties over random code with the tiny BPE (split after newlines) and a
GPT-2-style byte-level BPE (newlines merge with the next line's indentation)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.lines import (
    decode,
    decoded_offsets,
    encode_with_offsets,
    is_neutral,
    line_last_tokens,
    prefix,
    segment,
    segment_ids,
    split_lines,
)
from models.tokenizer import train_tokenizer

CORPUS = [
    "def f(xs):\n    ys = [x * 2 for x in xs]\n    # double\n\n    return ys\n",
    "def g(a, b):\n\tif a > b:\n\t\treturn a  # bigger\n\treturn b\n",
    "class K:\n    def m(self):\n        s = 'héllo 中文 ✓'\n        return s\n\n\n",
] * 20

LINE_PARTS = st.sampled_from(
    ["x", "y1", "return", " ", "=", "+", "(", ")", "[", "]", ":", "'s'", "é", "中", "🙂", "# c"]
)
LINE = st.tuples(
    st.sampled_from(["", "    ", "        ", "\t", "  "]),
    st.lists(LINE_PARTS, max_size=6).map("".join),
).map("".join)
CODE = st.tuples(st.lists(LINE, max_size=8), st.booleans()).map(
    lambda parts: "\n".join(parts[0]) + ("\n" if parts[1] and parts[0] else "")
)


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "tiny": train_tokenizer(CORPUS, 300),
        "generic": train_tokenizer(CORPUS, 300, split_after_newline=False),
    }


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(text=CODE)
def test_split_lines_covers_the_text(text):
    lines = split_lines(text)
    assert "".join(line.text + "\n" * line.has_newline for line in lines) == text
    assert len(lines) == len(text.splitlines())  # str.splitlines agrees for '\n'-only text
    for line in lines:
        assert "\n" not in line.text and text[line.start : line.end] == line.text
        assert line.neutral == (not line.text.strip() or line.text.strip().startswith("#"))
    assert all(line.has_newline for line in lines[:-1])


@SETTINGS
@given(text=CODE)
@pytest.mark.parametrize("name", ["tiny", "generic"])
def test_last_token_is_the_first_that_completes_the_line(tokenizers, name, text):
    tokenizer = tokenizers[name]
    ids, offsets = encode_with_offsets(tokenizer, text)
    assert decode(tokenizer, ids) == text
    seg = segment(text, offsets)
    assert seg.last_tokens == sorted(seg.last_tokens)
    for line, t in zip(seg.lines, seg.last_tokens, strict=True):
        done = text[: line.stop]
        # through token t the line is complete (its newline emitted); one token earlier it is not
        assert decode(tokenizer, ids[: t + 1]).startswith(done)
        assert not decode(tokenizer, ids[:t]).startswith(done)
        start, end = offsets[t]
        assert start <= line.end_char < end
        if name == "tiny":  # split after newlines: the line ends exactly on a token boundary
            assert decode(tokenizer, ids[: t + 1]) == done


@SETTINGS
@given(text=CODE)
@pytest.mark.parametrize("name", ["tiny", "generic"])
def test_decoded_offsets_agree_with_the_tokenizer_offsets(tokenizers, name, text):
    tokenizer = tokenizers[name]
    ids, offsets = encode_with_offsets(tokenizer, text)
    lines = split_lines(text)
    from_ids = segment_ids(tokenizer, [*ids, tokenizer.eos_token_id])  # a sampled EOS is harmless
    assert from_ids.text == text
    assert from_ids.last_tokens == line_last_tokens(lines, offsets)
    spans = decoded_offsets(tokenizer, ids)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert (spans[-1][1] if spans else 0) == len(text)


@SETTINGS
@given(text=CODE, prompt=st.sampled_from(["", "def f(x):\n", "def f(x):\n    y = 1"]))
def test_prefixes_stop_at_line_boundaries(text, prompt):
    lines = split_lines(text)
    for m in range(len(lines) + 1):
        expected = "".join(line.text + "\n" * line.has_newline for line in lines[:m])
        assert prefix(prompt, text, m) == prompt + expected
    assert prefix(prompt, text, len(lines)) == prompt + text
    with pytest.raises(ValueError, match="outside"):
        prefix(prompt, text, len(lines) + 1)


def test_a_token_holding_two_newlines_ends_both_lines(tokenizers):
    tokenizer = tokenizers["generic"]
    text = "    a = 1\n\n    return a\n"
    ids, offsets = encode_with_offsets(tokenizer, text)
    seg = segment(text, offsets)
    assert [line.text for line in seg.lines] == ["    a = 1", "", "    return a"]
    assert [line.neutral for line in seg.lines] == [False, True, False]
    first, blank, _ = seg.last_tokens
    assert first <= blank  # non-decreasing, possibly equal when one token spans both newlines
    assert decode(tokenizer, ids[: blank + 1]).startswith("    a = 1\n\n")


def test_neutral_lines():
    assert is_neutral("") and is_neutral("   ") and is_neutral("  # note")
    assert not is_neutral("x = 1  # note") and not is_neutral("return '#'")


def test_a_final_line_without_newline_ends_at_its_last_character(tokenizers):
    tokenizer = tokenizers["tiny"]
    text = "    x = 1\n    return x"
    ids, offsets = encode_with_offsets(tokenizer, text)
    seg = segment(text, offsets)
    assert not seg.lines[-1].has_newline
    assert seg.last_tokens[-1] == len(ids) - 1
