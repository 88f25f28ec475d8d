"""Line segmentation: the one definition of "line" that labeling, the PRM, PPO and the UI share.

A response's text is split at ``"\\n"``. Line ``m`` (0-based here; the paper counts from 1)
covers the characters ``[start, end)`` of the response, without its newline; ``has_newline``
says whether a newline follows it (only the last line may lack one). A response that ends with
a newline has no empty line after it; the empty response has no lines.

The **end character** of a line is its newline, or its last character if it has no newline
(the final line of a response cut off without one). The **last token** of a line is the last
token whose character span contains the end character. So:

- it is the first token at which the line is known to be complete (its newline was emitted) —
  the PRM's score there judges ``y_{≤m}`` and PPO pays the dense reward ``r_m`` there;
- a token that merges a newline with the next line's indentation (``"\\n    "``, GPT-2-style
  tokenizers) ends the line before it; a token that spans several newlines (``"\\n\\n"``) ends
  several lines, so indices are non-decreasing, not strictly increasing;
- a byte-level token that holds only part of a multi-byte character shares that character's
  span with the token that completes it; the later one counts;
- with the tiny tokenizer (split after every newline) no line's last token holds characters of
  the next line; nothing here relies on that.

Token spans come from the tokenizer's offset mapping when text is encoded
(``encode_with_offsets``), or, for sampled token ids, from decoding growing prefixes
(``decoded_offsets``), which works for any tokenizer whose decoding is prefix-stable.

**Neutral** lines — blank or comment-only — get label 0 in PRM data (the paper: the policy
otherwise games the PRM with comments). A ``#`` inside a multi-line string counts as a comment
here; the benchmark and typical solutions do not have such lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for hints: the benchmark imports this module and stays light
    from transformers import PreTrainedTokenizerBase

Span = tuple[int, int]


@dataclass(frozen=True)
class Line:
    index: int  # 0-based position in the response
    start: int  # first character (response offsets)
    end: int  # one past the last character, newline excluded
    has_newline: bool
    text: str  # without the newline
    neutral: bool  # blank or comment-only

    @property
    def end_char(self) -> int:
        """The character whose token ends the line: the newline, else the last character."""
        return self.end if self.has_newline else self.end - 1

    @property
    def stop(self) -> int:
        """One past the line's newline (or its end): ``text[:stop]`` is ``y_{≤m}``."""
        return self.end + 1 if self.has_newline else self.end


def is_neutral(text: str) -> bool:
    """Blank or comment-only."""
    stripped = text.strip()
    return not stripped or stripped.startswith("#")


def split_lines(text: str) -> list[Line]:
    lines, start = [], 0
    while start < len(text):
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline
        body = text[start:end]
        lines.append(Line(len(lines), start, end, newline >= 0, body, is_neutral(body)))
        start = end + 1
    return lines


def encode_with_offsets(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> tuple[list[int], list[Span]]:
    """Token ids of ``text`` (no special tokens) and each token's character span."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoding["input_ids"]), [tuple(span) for span in encoding["offset_mapping"]]


def decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """The one decoding used for responses: special tokens dropped, no space clean-up (which
    would change the code)."""
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def decoded_offsets(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[Span]:
    """Character spans of ``ids`` in ``decode(ids)``, by decoding growing prefixes.

    A token ends where the decoded prefix through it stops agreeing with the full text, so a
    partial multi-byte character (decoded as U+FFFD) belongs to the token that completes it.
    Special tokens get empty spans. Quadratic in length, which is fine for responses.
    """
    full = decode(tokenizer, ids)
    spans: list[Span] = []
    done = 0
    for k in range(len(ids)):
        prefix = decode(tokenizer, ids[: k + 1])
        agree = 0
        limit = min(len(prefix), len(full))
        while agree < limit and prefix[agree] == full[agree]:
            agree += 1
        end = max(done, agree)
        spans.append((done, end))
        done = end
    return spans


def line_last_tokens(lines: Sequence[Line], offsets: Sequence[Span]) -> list[int]:
    """For each line the index of its last token: the last token that starts at or before the
    line's end character. Where spans tile the text (byte-level tokenizers, decoded offsets)
    that is exactly the last token containing it, as the module docstring defines; where a
    tokenizer leaves characters out of every span, it is the last token before them."""
    starts = [start for start, _ in offsets]
    result = []
    for line in lines:
        token = bisect.bisect_right(starts, line.end_char) - 1
        if token < 0:
            raise ValueError(f"no token starts at or before character {line.end_char}")
        result.append(token)
    return result


@dataclass(frozen=True)
class Segmented:
    text: str
    lines: list[Line]
    last_tokens: list[int]  # one per line


def segment(text: str, offsets: Sequence[Span]) -> Segmented:
    lines = split_lines(text)
    return Segmented(text, lines, line_last_tokens(lines, offsets))


def segment_ids(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> Segmented:
    """Segment a sampled response given only its token ids."""
    return segment(decode(tokenizer, ids), decoded_offsets(tokenizer, ids))


def prefix(prompt: str, response: str, m: int) -> str:
    """``x + y_{≤m}``: the prompt and the response's first ``m`` lines with their newlines.

    ``m = 0`` is the bare prompt; a continuation sampled from it starts on a fresh line.
    """
    lines = split_lines(response)
    if not 0 <= m <= len(lines):
        raise ValueError(f"m={m} is outside 0..{len(lines)} for a response of {len(lines)} lines")
    return prompt + (response[: lines[m - 1].stop] if m else "")
