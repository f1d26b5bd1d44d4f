"""Decoding that cannot leave a blurb's support: a hard constraint on GPT-2's next token.

``AllowedWords`` is a logits processor for ``generate``. Each row of the batch has its
set of allowed words (``support.Support.allowed``). At every step it tracks the word
being written (the letters since the last space or punctuation) and lets through only
tokens that keep it a prefix of an allowed word, or, once it is a whole allowed word,
tokens that start another allowed word, punctuation from a short list, or the end of
text. So every word of a continuation is a supported word, and a spliced compound
("maple-coil-coil") cannot be formed. The guard checks the same rule afterwards.

Byte-level BPE means a word can be spelt by several token sequences; all of them are
allowed, so the constraint never blocks the spelling the model prefers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["PUNCTUATION", "AllowedSentences", "AllowedWords", "TokenTable"]

PUNCTUATION = frozenset(".,;:!?\"'()-—’“”")
_JOINERS = frozenset("-'’")  # inside a word: "single-coil", "Herbert's"
_WORD_CHAR = re.compile(r"[^\W_]")
_TRAILING_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]*)*$")


class TokenTable:
    """Each vocabulary entry's text, classified once per tokenizer.

    Args:
        tokenizer: a GPT-2 tokenizer.
        vocab_size: the model's vocabulary size (may exceed the tokenizer's).
    """

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        special = set(tokenizer.all_special_ids)
        self.eos = int(tokenizer.eos_token_id)
        self.vocab_size = vocab_size
        self.new_word: dict[int, str] = {}  # " word" tokens: id -> word (lowercased)
        self.inner: dict[str, list[int]] = {}  # "ord" tokens that continue a word: text -> ids
        self.punct: list[int] = []  # tokens of allowed punctuation (with or without a leading space)
        self.other_bytes: list[int] = []  # pieces of multi-byte characters
        self.by_text: dict[str, list[int]] = {}  # every token's exact text -> ids
        for i in range(min(len(tokenizer), vocab_size)):
            if i in special:
                continue
            text = tokenizer.decode([i])
            self.by_text.setdefault(text, []).append(i)
            if "\ufffd" in text:
                self.other_bytes.append(i)
                continue
            body = text[1:] if text.startswith(" ") else text
            if not body:
                continue
            if all(c in PUNCTUATION for c in body):
                self.punct.append(i)
                if not text.startswith(" ") and all(c in _JOINERS for c in body):
                    self.inner.setdefault(body.lower(), []).append(i)
            elif text.startswith(" ") and _is_word(body):
                self.new_word[i] = body.lower().replace("’", "'")
            elif not text.startswith(" ") and _is_word(body, inner=True):
                self.inner.setdefault(body.lower().replace("’", "'"), []).append(i)


def _is_word(text: str, *, inner: bool = False) -> bool:
    """Letters and digits, with joiners inside (or anywhere, for a word's inner piece)."""
    if not text:
        return False
    if not inner and not _WORD_CHAR.match(text[0]):
        return False
    return all(_WORD_CHAR.match(c) or c in _JOINERS for c in text)


class AllowedWords:
    """A logits processor that keeps every generated word inside its row's allowed set.

    Args:
        table: the tokenizer's ``TokenTable``.
        allowed: one set of allowed words (lowercase) per prompt.
        leads: per prompt, the text just before the first generated token (the end of
            the fixed opening), so a title's last word is not extended into another word.
        prompt_len: the prompt's length in tokens (the generated part starts there).
        repeat: rows per prompt (beams or returned sequences).
        decode: turns token ids into text (``tokenizer.decode``).
    """

    def __init__(
        self,
        table: TokenTable,
        allowed: Sequence[frozenset[str]],
        leads: Sequence[str],
        prompt_len: int,
        repeat: int,
        decode: Any,
    ) -> None:
        self.table = table
        self.allowed = [frozenset(w.replace("’", "'") for w in a) for a in allowed]
        self.prefixes = [frozenset(w[:n] for w in a for n in range(1, len(w) + 1)) for a in self.allowed]
        self.leads = [lead[-len(_trailing_word(lead)) :] if _trailing_word(lead) else "" for lead in leads]
        self.prompt_len = prompt_len
        self.repeat = repeat
        self.decode = decode
        self._starts: list[list[int] | None] = [None] * len(allowed)
        self._bare: list[list[int] | None] = [None] * len(allowed)
        self._any_non_ascii = [any(not w.isascii() for w in a) for a in self.allowed]

    def _start_ids(self, p: int) -> list[int]:
        """Tokens that may follow a whole word: a new allowed word, punctuation, the end."""
        if self._starts[p] is None:
            pre = self.prefixes[p]
            ids = [i for i, w in self.table.new_word.items() if w in pre]
            ids += self.table.punct
            ids.append(self.table.eos)
            if self._any_non_ascii[p]:
                ids += self.table.other_bytes
            self._starts[p] = ids
        return self._starts[p]  # type: ignore[return-value]

    def _bare_starts(self, p: int) -> list[int]:
        """Tokens without a leading space that start an allowed word (after punctuation)."""
        if self._bare[p] is None:
            self._bare[p] = [i for piece, ids in self.table.inner.items() if piece in self.prefixes[p] for i in ids]
        return self._bare[p]  # type: ignore[return-value]

    def _inner_ids(self, p: int, partial: str) -> list[int]:
        """Tokens that extend ``partial`` towards an allowed word."""
        ids: list[int] = []
        seen: set[str] = set()
        for word in self.allowed[p]:
            if len(word) > len(partial) and word.startswith(partial):
                rest = word[len(partial) :]
                for n in range(1, len(rest) + 1):
                    piece = rest[:n]
                    if piece not in seen:
                        seen.add(piece)
                        ids += self.table.inner.get(piece, ())
        if self._any_non_ascii[p]:
            ids += self.table.other_bytes
        return ids

    def allowed_ids(self, r: int, new: list[int]) -> list[int]:
        """The token ids row ``r`` may take next, after generating ``new``."""
        p = r // self.repeat
        text = self.leads[p] + (self.decode(new) if new else "")
        partial = "" if not text or text[-1].isspace() else _trailing_word(text)
        if partial:
            ids = self._inner_ids(p, partial)
        elif text and not text[-1].isspace():  # a word may start right after '"' or '('
            ids = self._bare_starts(p)
        else:
            ids = []
        if not partial or partial in self.allowed[p] or not new:  # the opening's last word is ours
            ids = ids + self._start_ids(p)
            if not new:  # an empty continuation is no blurb: write at least one token
                ids = [i for i in ids if i != self.table.eos]
        return ids or [self.table.eos]  # never leave a row without a way out

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _mask_all_but(self, input_ids, scores)


def _trailing_word(text: str) -> str:
    m = _TRAILING_WORD.search(text)
    return m.group(0).lower().replace("’", "'") if m else ""


class AllowedSentences:
    """A logits processor that keeps a continuation inside a sentence grammar: a first
    sentence from ``first``, then any of ``rest`` (each at most once), then the end.

    For a generator taught fact continuations (``prompts.sentence_options``): every
    sentence it can write is a taught frame filled with true facts, a quote of the
    user's own review, or a sentence of the item's description, so its text is fluent
    and faithful by construction; the model chooses which, in what order, and when to
    stop.

    Args:
        table: the tokenizer's ``TokenTable``.
        options: per prompt, ``(first, rest)`` sentences as written (leading space included).
        prompt_len: the prompt's length in tokens.
        repeat: rows per prompt (beams or returned sequences).
        decode: turns token ids into text.
    """

    max_piece = 24  # longest token text looked up

    def __init__(
        self,
        table: TokenTable,
        options: Sequence[tuple[Sequence[str], Sequence[str]]],
        prompt_len: int,
        repeat: int,
        decode: Any,
    ) -> None:
        self.table = table
        self.options = [(list(first), list(rest)) for first, rest in options]
        self.prompt_len = prompt_len
        self.repeat = repeat
        self.decode = decode

    def allowed_next(self, p: int, text: str) -> list[int]:
        """Token ids that may follow the continuation ``text`` of prompt ``p``."""
        first, rest = self.options[p]
        done = 0
        remaining = text
        used: set[str] = set()
        while True:  # consume whole sentences, longest first
            pool = first if done == 0 else [s for s in rest if s not in used]
            whole = [s for s in pool if remaining.startswith(s)]
            if not whole:
                break
            sentence = max(whole, key=len)
            used.add(sentence)
            remaining = remaining[len(sentence) :]
            done += 1
        pool = first if done == 0 else [s for s in rest if s not in used]
        ids: list[int] = []
        for sentence in pool:
            if sentence.startswith(remaining) and len(sentence) > len(remaining):
                tail = sentence[len(remaining) :]
                for n in range(1, min(len(tail), self.max_piece) + 1):
                    ids += self.table.by_text.get(tail[:n], ())
        if not remaining and done > 0:
            ids.append(self.table.eos)
        return ids or [self.table.eos]

    def allowed_ids(self, r: int, new: list[int]) -> list[int]:
        """The token ids row ``r`` may take next, after generating ``new``."""
        return self.allowed_next(r // self.repeat, self.decode(new) if new else "")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _mask_all_but(self, input_ids, scores)


def _mask_all_but(constraint: AllowedWords | AllowedSentences, input_ids: torch.Tensor, scores: torch.Tensor) -> Any:
    """``scores`` with every token but each row's ``allowed_ids`` at -inf (the processor's step)."""
    import torch

    mask = torch.full_like(scores, float("-inf"))
    width = scores.shape[-1]
    for r in range(input_ids.shape[0]):
        new = input_ids[r, constraint.prompt_len :].tolist()
        mask[r, [i for i in constraint.allowed_ids(r, new) if i < width]] = 0.0
    return scores + mask
