"""EDA text augmentation on token lists: synonym replacement, random insertion, swap, deletion.

Synonym replacement is nlpaug's `SynonymAug(aug_src="wordnet")`, run offline on the WordNet
tree from `augment.wordnet`. Two offline gaps are filled here: nlpaug's POS tagger needs
NLTK's `averaged_perceptron_tagger_eng`, which nothing installable ships, so a word is tagged
by the part of speech of its first WordNet sense; and nlpaug has no WordNet insertion, so
random insertion of a synonym is our own. Every random choice goes through one numpy
Generator, so a seed gives the same sentences.
"""
from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from augment.wordnet import ensure_nltk_data

Sentence = list[str]

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

# Penn Treebank tag for the part of speech of a word's first WordNet sense ('s': satellite adjective).
_PENN_TAG = {"n": "NN", "v": "VB", "a": "JJ", "s": "JJ", "r": "RB"}


@lru_cache(maxsize=1)
def _wordnet():
    """NLTK's WordNet reader over the offline tree (built on first use)."""
    ensure_nltk_data()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


def first_sense_tag(word: str) -> str:
    """Penn tag of the word's first WordNet sense; 'XX' for words WordNet does not know."""
    synsets = _wordnet().synsets(word)
    return _PENN_TAG[synsets[0].pos()] if synsets else "XX"


def synonyms(word: str) -> list[str]:
    """WordNet synonyms of word over all its senses, in WordNet order, without the word itself."""
    seen: dict[str, None] = {}
    for synset in _wordnet().synsets(word):
        for lemma in synset.lemma_names():
            candidate = lemma.replace("_", " ").lower()
            if candidate != word.lower():
                seen.setdefault(candidate, None)
    return list(seen)


def _n_changes(tokens: Sentence, alpha: float) -> int:
    return max(1, round(alpha * len(tokens)))


class _NoTorch(importlib.abc.MetaPathFinder):
    """Makes `import torch` raise ImportError while installed (nlpaug's import is optional)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, D102
        if fullname.split(".")[0] == "torch":
            raise ImportError("torch is not loaded for augment")
        return None


def _import_nlpaug_word():
    """Imports nlpaug's word augmenters without torch, which nlpaug imports only for the
    language-model augmenters we do not use (augment never loads torch: ARCHITECTURE.md)."""
    finder = _NoTorch()
    if "torch" not in sys.modules:
        sys.meta_path.insert(0, finder)
    try:
        import nlpaug.augmenter.word as naw
        import nlpaug.model.word_dict as nmw
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
    return naw, nmw


@lru_cache(maxsize=8)
def _synonym_aug(alpha: float):
    """nlpaug's SynonymAug with WordNet and first-sense tagging; its draws use the Generator in `.rng`."""
    _wordnet()  # first: nlpaug's WordNet model would try to download the corpus if NLTK cannot find it
    naw, nmw = _import_nlpaug_word()

    class FirstSenseWordNet(nmw.WordNet):
        @classmethod
        def pos_tag(cls, tokens):
            return [(token, first_sense_tag(token)) for token in tokens]

    class SeededSynonymAug(naw.SynonymAug):
        rng: np.random.Generator

        @classmethod
        def get_model(cls, aug_src, lang, dict_path, force_reload):
            return FirstSenseWordNet(lang=lang, is_synonym=True)

        def sample(self, x, num=None):
            picks = self.rng.choice(len(x), size=num, replace=False)
            return [x[i] for i in picks]

    return SeededSynonymAug(
        aug_src="wordnet", aug_p=alpha, aug_min=1, aug_max=None, stopwords=sorted(STOPWORDS),
        tokenizer=lambda text: text.split(" "), reverse_tokenizer=list)


def synonym_replacement(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1) -> Sentence:
    """Replaces about alpha x len(tokens) (at least 1) non-stopwords by a WordNet synonym (nlpaug)."""
    if not tokens:
        return []
    if any(" " in token or not token for token in tokens):
        raise ValueError(f"tokens must be non-empty words without spaces, got {list(tokens)!r}")
    aug = _synonym_aug(alpha)
    aug.rng = rng
    (replaced,) = aug.augment(" ".join(tokens))
    return [word for token in replaced for word in token.split(" ")]


def random_insertion(tokens: Sequence[str], rng: np.random.Generator, alpha: float = 0.1) -> Sentence:
    """Inserts, about alpha x len(tokens) times, a synonym of a random non-stopword at a random place."""
    out = list(tokens)
    sources = [t for t in tokens if t.lower() not in STOPWORDS and synonyms(t)]
    if not sources:
        return out
    for _ in range(_n_changes(out, alpha)):
        options = synonyms(sources[rng.integers(len(sources))])
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
# The paper's text augmentation (+0.9 points for the LSTM) is synonym replacement.
DEFAULT_TEXT_OPS = ("synonym",)


def augment_sentences(sentences: Sequence[Sequence[str]], ratio: float = 1.0,
                      rng: np.random.Generator | int | None = None,
                      ops: Sequence[str] = DEFAULT_TEXT_OPS, alpha: float = 0.1) -> list[Sentence]:
    """The sentences, then at most ratio x len(sentences) augmented copies of random ones.

    Each copy comes from one op drawn from ops; copies identical to their source are dropped,
    hence "at most". ratio 1.0 is the paper's cap (at most 1x the original data).
    """
    unknown = [op for op in ops if op not in TEXT_OPS]
    if unknown or not ops:
        raise ValueError(f"unknown text augmentation op(s) {unknown or list(ops)!r}; known: {sorted(TEXT_OPS)}")
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    rng = np.random.default_rng(rng)
    originals = [list(s) for s in sentences]
    count = int(ratio * len(originals))
    sources = rng.choice(len(originals), size=count, replace=count > len(originals)) if count else []
    augmented = []
    for index in sources:
        op = ops[rng.integers(len(ops))]
        source = originals[index]
        copy = TEXT_OPS[op](source, rng, alpha)
        if copy != source:
            augmented.append(copy)
    return originals + augmented
