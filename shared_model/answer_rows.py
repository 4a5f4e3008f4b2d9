"""Output rows that train in full: the tokens of the consortium's answer vocabulary.

Where a base's hidden state already holds an answer (on the tiny base a linear probe reads
the lesion class from it without error), what DP-SGD has left to learn is the readout: which
token the output layer writes from it. LoRA spreads that over low-rank products; the
``lm_head`` rows of the few hundred tokens answers are written in are the readout's own
coordinates (a few hundred times the hidden size: 37 k on the tiny base, about 0.5 M on
Qwen2-VL-2B for 300 rows). They are peft's trainable tokens (``trainable_token_indices``), so
they travel, save and merge like the LoRA matrices, and their per-sample gradients are exact
(:mod:`client.privacy.per_unit`). Measured on the tiny base and not its default
(:func:`shared_model.tiny.tiny_spec`): the loss under DP noise falls faster, the answers do not
improve.

The vocabulary is the consortium's and public (option names, yes and no, digits, the box
syntax), fixed in the model spec before any round: which rows carry noise never depends on a
site's records.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

OUTPUT_LAYER = "lm_head"
ROWS_MARKER = "trainable_tokens_delta"
"""What names the trained rows, as a parameter and as an exchanged array."""


def answer_token_ids(vocabulary: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The sorted ids of every token ``vocabulary``'s entries are written in, each entry on
    its own and after a space (a word inside a sentence), special tokens as themselves."""
    ids: set[int] = set()
    for entry in vocabulary:
        for text in (entry, f" {entry}"):
            ids.update(tokenizer(text, add_special_tokens=False).input_ids)
    return sorted(ids)


@lru_cache(maxsize=8)
def _base_tokenizer(base: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(base)


def base_answer_token_ids(base: Path, vocabulary: tuple[str, ...]) -> list[int]:
    """:func:`answer_token_ids` with the tokenizer of the base checkpoint in ``base``."""
    return answer_token_ids(vocabulary, _base_tokenizer(Path(base)))
