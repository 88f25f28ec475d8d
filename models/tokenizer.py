"""The tiny model's tokenizer: a byte-level BPE trained on the task's own text.

Byte-level, so any string round-trips (no unknown tokens). The default pre-tokenizer splits
after every newline, so no token crosses a line end and a line's last token never holds
characters of the next line — convenient, but ``models.lines`` does not rely on it: general
tokenizers merge newlines with the following indentation.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, *, split_after_newline: bool = True
) -> PreTrainedTokenizerFast:
    """A byte-level BPE with at most ``vocab_size`` tokens (fewer if the text saturates).

    ``split_after_newline=False`` gives a GPT-2-style tokenizer instead (its regex keeps a
    newline together with the next line's indentation), which tests use as a generic one.
    """
    tokenizer = Tokenizer(models.BPE())
    if split_after_newline:
        # Within a line no regex: BPE may merge across spaces ("    return "), which shortens
        # the highly repetitive benchmark code and so speeds up training and sampling.
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), behavior="merged_with_previous"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
