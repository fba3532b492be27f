"""The character corpora of the char-level language-model task (``task="charlm"``): the shipped text and "hello".

    char_corpus(text) -> (corpus, CharVocab)   the text and its sorted character vocabulary
    perplexity(ce)                             exp of a per-character cross-entropy in nats
"""
from __future__ import annotations

import math
import operator
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import torch

TEXTS = ("shipped", "hello")
DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_TEXT_PATH = DATA_DIR / "sonnets.txt"


def _check_text(text) -> str:
    if text not in TEXTS:
        allowed = ", ".join(repr(t) for t in TEXTS)
        raise ValueError(f"text={text!r} is not a known corpus: must be one of {allowed}")
    return text


def _id(value) -> int:
    """A vocabulary id as an int; bools and floats are rejected."""
    if isinstance(value, bool):
        raise ValueError(f"id={value!r} must be an int, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"id={value!r} must be an int") from None


class CharVocab:
    """Character vocabulary: ``chars`` sorted, ``stoi`` char -> id, ``itos`` id -> char."""

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = sorted(set(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise ValueError(f"chars={self.chars!r} is invalid: must be a non-empty set of single characters")
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        self.itos: dict[int, str] = dict(enumerate(self.chars))

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls(text)

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"CharVocab(size={self.size})"

    def encode(self, s: str) -> torch.Tensor:
        """String -> LongTensor of ids, shape (len(s),)."""
        try:
            return torch.tensor([self.stoi[c] for c in s], dtype=torch.long)
        except KeyError as exc:
            ch = exc.args[0]
            raise ValueError(
                f"character {ch!r} at index {s.index(ch)} is not in the vocabulary ({self.size} chars)"
            ) from None

    def decode(self, ids) -> str:
        """Ids (tensor or iterable of ints) -> string."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()  # (n,) flat list of ints
        out = []
        for i in ids:
            i = _id(i)
            if not 0 <= i < self.size:
                raise ValueError(f"id={i} is out of range: must be in [0, {self.size - 1}]")
            out.append(self.itos[i])
        return "".join(out)


@lru_cache(maxsize=None)
def _corpus_text(text: str) -> str:
    if text == "hello":
        return "hello"
    raw = SHIPPED_TEXT_PATH.read_text(encoding="utf-8")
    _header, _, body = raw.partition("\n")  # first line: title / author / public domain
    return body.lstrip("\n")


def char_corpus(text: str = "shipped") -> tuple[str, CharVocab]:
    """Return ``(corpus, vocab)``.

    ``"shipped"``: a selection of Shakespeare's Sonnets (1609, public domain),
    ``analysis/data/sonnets.txt`` without its header line.
    ``"hello"``: the string ``"hello"`` (vocab e, h, l, o).
    """
    corpus = _corpus_text(_check_text(text))
    return corpus, CharVocab(corpus)


@lru_cache(maxsize=None)
def _corpus_ids(text: str) -> torch.Tensor:
    corpus, vocab = char_corpus(text)
    return vocab.encode(corpus)  # (N,)


def perplexity(ce: float) -> float:
    """Perplexity of a per-character cross-entropy in nats: ``exp(ce)``."""
    try:
        return math.exp(float(ce))
    except OverflowError:
        return math.inf
