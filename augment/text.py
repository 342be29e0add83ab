"""EDA text augmentation on token lists: synonym replacement, random insertion, swap, deletion.

Synonyms come from a lookup function, so each operation exists once for both sources: WordNet
(NLTK over the offline tree from `augment.wordnet`, on the cloud) or a table shipped in the
bundle (`augment.synonyms`, on a device without WordNet, where nltk is never imported). A
word's WordNet synonyms are those of its senses that share its first sense's part of speech: a
context-free stand-in for POS tagging (no tagger is installable offline) that keeps a
replacement in the word's likely role, and that a table carries with no tagging on the device.
Every random choice goes through one numpy Generator, so a seed gives the same sentences.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from augment.wordnet import ensure_nltk_data

Sentence = list[str]
SynonymLookup = Callable[[str], Sequence[str]]

# Function words that are never replaced or used as insertion sources (EDA's practice).
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
""".split())


@lru_cache(maxsize=1)
def _wordnet():
    """NLTK's WordNet reader over the offline tree (built on first use)."""
    ensure_nltk_data()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


def _part_of_speech(synset) -> str:  # noqa: ANN001
    """WordNet POS with satellite adjectives ('s') counted as adjectives ('a')."""
    return "a" if synset.pos() == "s" else synset.pos()


def wordnet_synonyms(word: str) -> list[str]:
    """WordNet synonyms of word from its senses of its first sense's part of speech, in WordNet
    order, lowercased, multi-word ones with spaces, without the word itself."""
    synsets = _wordnet().synsets(word)
    if not synsets:
        return []
    pos = _part_of_speech(synsets[0])
    seen: dict[str, None] = {}
    for synset in synsets:
        if _part_of_speech(synset) == pos:
            for lemma in synset.lemma_names():
                candidate = lemma.replace("_", " ").lower()
                if candidate != word.lower():
                    seen.setdefault(candidate, None)
    return list(seen)


def _n_changes(tokens: Sequence[str], alpha: float) -> int:
    return max(1, round(alpha * len(tokens)))


def _with_synonyms(tokens: Sequence[str], synonyms_of: SynonymLookup) -> dict[int, Sequence[str]]:
    """Position -> synonyms of the non-stopwords that have some."""
    return {i: options for i, token in enumerate(tokens)
            if token.lower() not in STOPWORDS and (options := synonyms_of(token))}


def synonym_replacement(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1,
                        synonyms_of: SynonymLookup = wordnet_synonyms) -> Sentence:
    """Replaces about alpha x len(tokens) (at least 1) non-stopwords that have synonyms by a random one."""
    candidates = _with_synonyms(tokens, synonyms_of)
    count = min(_n_changes(tokens, alpha), len(candidates))
    pieces = [[token] for token in tokens]
    for at in rng.choice(list(candidates), size=count, replace=False):
        options = candidates[at]
        pieces[at] = options[rng.integers(len(options))].split(" ")
    return [word for piece in pieces for word in piece]


def random_insertion(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1,
                     synonyms_of: SynonymLookup = wordnet_synonyms) -> Sentence:
    """Inserts, about alpha x len(tokens) times, a synonym of a random non-stopword at a random place."""
    out = list(tokens)
    sources = list(_with_synonyms(tokens, synonyms_of).values())
    if not sources:
        return out
    for _ in range(_n_changes(out, alpha)):
        options = sources[rng.integers(len(sources))]
        words = options[rng.integers(len(options))].split(" ")
        at = int(rng.integers(len(out) + 1))
        out[at:at] = words
    return out


def random_swap(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1) -> Sentence:
    """Swaps two random positions, about alpha x len(tokens) times (a no-op below 2 tokens)."""
    out = list(tokens)
    if len(out) < 2:
        return out
    for _ in range(_n_changes(out, alpha)):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1) -> Sentence:
    """Deletes each token with probability alpha, keeping at least one token."""
    out = list(tokens)
    if len(out) < 2:
        return out
    keep = rng.random(len(out)) >= alpha
    if not keep.any():
        keep[rng.integers(len(out))] = True
    return [t for t, k in zip(out, keep) if k]


TEXT_OPS: dict[str, Callable[..., Sentence]] = {
    "synonym": synonym_replacement,
    "insert": random_insertion,
    "swap": random_swap,
    "delete": random_deletion,
}
# The ops that take a `synonyms_of` lookup.
SYNONYM_OPS = frozenset({"synonym", "insert"})
# The paper's text augmentation (+0.9 points for the LSTM) is synonym replacement.
DEFAULT_TEXT_OPS = ("synonym",)


def augment_sentences(sentences: Sequence[Sequence[str]], ratio: float = 1.0,
                      rng: np.random.Generator | int | None = None,
                      ops: Sequence[str] = DEFAULT_TEXT_OPS, alpha: float = 0.1,
                      synonyms: Mapping[str, Sequence[str]] | None = None) -> list[Sentence]:
    """The sentences, then at most ratio x len(sentences) augmented copies of random ones.

    Each copy comes from one op drawn from ops; copies identical to their source are dropped,
    hence "at most". ratio 1.0 is the paper's cap (at most 1x the original data). synonyms, a
    word -> synonyms table, replaces WordNet (which is then never loaded).
    """
    unknown = [op for op in ops if op not in TEXT_OPS]
    if unknown or not ops:
        raise ValueError(f"unknown text augmentation op(s) {unknown or list(ops)!r}; known: {sorted(TEXT_OPS)}")
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    lookup: SynonymLookup = wordnet_synonyms if synonyms is None else (lambda word: synonyms.get(word, ()))
    rng = np.random.default_rng(rng)
    originals = [list(s) for s in sentences]
    count = int(ratio * len(originals))
    sources = rng.choice(len(originals), size=count, replace=count > len(originals)) if count else []
    augmented = []
    for index in sources:
        op = ops[rng.integers(len(ops))]
        source = originals[index]
        extra = {"synonyms_of": lookup} if op in SYNONYM_OPS else {}
        copy = TEXT_OPS[op](source, rng, alpha, **extra)
        if copy != source:
            augmented.append(copy)
    return originals + augmented
