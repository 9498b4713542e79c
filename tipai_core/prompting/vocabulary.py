"""Decoding held to a vocabulary of words, for text encoders that know only a small grammar.

A toy world's text encoder (ShapesWorld's knows about twenty words) cannot read an arbitrary phrase, so
the language model's rewrite must be made of its words only. An allowed output is

    ' '* w_1 ' ' w_2 ' ' ... ' ' w_n [' ']      n >= 1, every w_i in the vocabulary W

(leading spaces, single spaces between words; case-sensitive; no punctuation, no newline).

How decoding is held to it (``WordConstraint``, applied as a LogitsProcessor at every step): each token
id t has its text piece π(t), the text it adds after an anchor token (so a SentencePiece "▁red" is
" red", as in context; a byte-level "Ġred" too). The state of the text generated so far is its last,
unfinished word p (after the last space) and whether a word has begun. A token is allowed iff
p + π(t) splits on single spaces into whole words of W followed by a prefix of a word of W (or
nothing); at the start leading spaces are dropped first, and the piece must begin a word. EOS is
allowed iff a word has begun and p is empty or a whole word. Every other logit is set to -inf. The
allowed set depends only on the state, and the states are the prefixes of W's words, so each is
computed once and cached; it looks only at the tokens whose pieces use W's letters and the space and
whose text before the first space continues p (an index by that text). ``constraint_for`` keeps one
constraint per tokenizer and vocabulary, so its pieces are decoded and its states computed once.

If decoding stops at ``max_new_tokens`` inside a word, ``finish`` drops the unfinished word.
``in_vocabulary`` tells whether a text parses to words of W; ``unknown_words`` lists the ones that do not.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import torch


def check_words(words: Iterable[str]) -> tuple[str, ...]:
    """The vocabulary as a tuple of distinct words, each non-empty and without whitespace."""
    if isinstance(words, str):
        raise ValueError("allowed_words must be a collection of words, not one string; split it first")
    out: list[str] = []
    for w in words:
        if not isinstance(w, str) or not w or any(c.isspace() for c in w):
            raise ValueError(f"allowed_words: every word must be a non-empty string without spaces, got {w!r}")
        if w not in out:
            out.append(w)
    if not out:
        raise ValueError("allowed_words is empty; give the words the output may use")
    return tuple(out)


def unknown_words(text: str, words: Iterable[str]) -> list[str]:
    """The words of ``text`` (split on whitespace) that are not in the vocabulary, in order."""
    vocab = set(check_words(words))
    return [w for w in text.split() if w not in vocab]


def in_vocabulary(text: str, words: Iterable[str]) -> bool:
    """True when ``text`` holds at least one word and every word of it (split on whitespace) is in ``words``."""
    return bool(text.split()) and not unknown_words(text, words)


def finish(text: str, words: Iterable[str]) -> str:
    """A constrained output made whole: its words joined by single spaces, an unfinished last word dropped."""
    vocab = set(check_words(words))
    parts = text.split()
    if parts and parts[-1] not in vocab:
        parts = parts[:-1]
    return " ".join(parts)


def token_pieces(tokenizer, size: int | None = None) -> list[str]:
    """π(t) for every token id t < ``size`` (default: the tokenizer's length): the text t adds after an anchor
    token, so that leading-space markers decode as in context. Special tokens and ids past the tokenizer give ''."""
    n = len(tokenizer) if size is None else size
    anchor = tokenizer.encode("a", add_special_tokens=False)[:1]
    base = tokenizer.decode(anchor, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    known = min(n, len(tokenizer))
    texts = tokenizer.batch_decode(
        [anchor + [i] for i in range(known)], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    pieces = [t[len(base) :] if t.startswith(base) else "" for t in texts]
    return pieces + [""] * (n - known)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {key: pieces or constraint}
_MAX_CACHED = 8  # constraints kept per tokenizer (one per vocabulary in use)


def constraint_for(tokenizer, words: Iterable[str], eos_ids: Iterable[int], size: int) -> "WordConstraint":
    """The ``WordConstraint`` of ``words`` for ``tokenizer`` (logits of ``size`` ids), built once and kept while the
    tokenizer lives: its pieces are a batch decode of the whole vocabulary, and its states fill in as they are met."""
    key = (check_words(words), tuple(eos_ids), size)
    try:
        cache = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that takes no weak reference: nothing kept
        return WordConstraint(key[0], token_pieces(tokenizer, size), key[1])
    if ("pieces", size) not in cache:
        cache[("pieces", size)] = token_pieces(tokenizer, size)
    if key not in cache:
        built = [k for k in cache if k[0] != "pieces"]
        for old in built[: max(0, len(built) - _MAX_CACHED + 1)]:
            del cache[old]
        cache[key] = WordConstraint(key[0], cache[("pieces", size)], key[1])
    return cache[key]


class WordConstraint:
    """The allowed next tokens for a text generated so far, under the vocabulary ``words`` (see the module doc).

    ``pieces[t]`` is π(t) (``token_pieces``), ``eos_ids`` the ids that end the text."""

    def __init__(self, words: Iterable[str], pieces: Sequence[str], eos_ids: Iterable[int]):
        self.words = frozenset(check_words(words))
        self.prefixes = frozenset(w[:i] for w in self.words for i in range(1, len(w) + 1))
        self.size = len(pieces)
        self.eos_ids = sorted({int(i) for i in eos_ids if 0 <= int(i) < self.size})
        letters = set("".join(self.words)) | {" "}
        eos = set(self.eos_ids)
        self.candidates = [(i, p) for i, p in enumerate(pieces) if p and i not in eos and set(p) <= letters]
        # after a word has begun, p + π(t) must go on with a prefix: index the candidates by the text before their
        # first space (those that start with a space by the text after it), so a state looks only at those that fit
        self._by_head: dict[str, list[tuple[int, str]]] = {}
        self._after_space: dict[str, list[tuple[int, str]]] = {}
        for i, p in self.candidates:
            if p.startswith(" "):
                self._after_space.setdefault(p[1:].split(" ", 1)[0], []).append((i, p))
            else:
                self._by_head.setdefault(p.split(" ", 1)[0], []).append((i, p))
        self._masks: dict[tuple[str, bool], torch.Tensor] = {}

    def state(self, text: str) -> tuple[str, bool] | None:
        """(unfinished last word p, a word has begun) of ``text``; None when ``text`` is outside the grammar."""
        t = text.lstrip(" ")
        if not t:
            return "", False
        *whole, last = t.split(" ")
        if any(w not in self.words for w in whole) or (last and last not in self.prefixes):
            return None
        return last, True

    def _fits(self, last: str, begun: bool, piece: str) -> bool:
        if not begun:
            piece = piece.lstrip(" ")
            if not piece:
                return False
        *whole, rest = (last + piece).split(" ")
        return all(w in self.words for w in whole) and (not rest or rest in self.prefixes)

    def mask(self, text: str) -> torch.Tensor:
        """A bool mask over token ids: True where the token may follow ``text`` (EOS where the text may end)."""
        st = self.state(text)
        if st is None:  # cannot happen under the constraint itself; end the text rather than widen it
            st = ("", True) if text.strip() else ("", False)
        if st not in self._masks:
            last, begun = st
            m = torch.zeros(self.size, dtype=torch.bool)
            if begun:
                heads = {q[len(last) :] for q in self.prefixes if q.startswith(last)} - {""}
                pool = [c for h in heads for c in self._by_head.get(h, ())]
                if last in self.words:  # the piece may start with the space that ends the word
                    pool += [c for h in self.prefixes | {""} for c in self._after_space.get(h, ())]
            else:
                pool = self.candidates
            ids = sorted(i for i, p in pool if self._fits(last, begun, p))
            if ids:
                m[ids] = True
            if (begun and (not last or last in self.words)) or not ids:
                m[self.eos_ids] = True
            self._masks[st] = m
        return self._masks[st]
