"""An offline NLTK_DATA tree for WordNet, built from the Debian packages.

NLTK (and so `augment.text.wordnet_synonyms`) reads WordNet from `<NLTK_DATA>/corpora/wordnet/`
and would otherwise download it. Debian's `wordnet-base` and `wordnet-sense-index` ship the
same WordNet 3.0 files minus `lexnames`, which NLTK needs and we generate. The files are
copied, not linked, so the tree survives the packages being removed or upgraded.
"""
from __future__ import annotations

import os
from pathlib import Path

from device_runtime.files import atomic_write_bytes, cache_dir

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

# NLTK's WordNetCorpusReader opens these; which Debian package ships each.
WORDNET_FILES: dict[str, str] = {
    **{name: "wordnet-base" for name in (
        "index.adj", "index.adv", "index.noun", "index.verb",
        "data.adj", "data.adv", "data.noun", "data.verb",
        "adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev",
    )},
    "index.sense": "wordnet-sense-index",
}

# WordNet 3.0 lexicographer files, numbered as in lexnames(5WN): (name, syntactic category
# 1 noun, 2 verb, 3 adjective, 4 adverb). Debian's package leaves this file out.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4),
    ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1), ("noun.artifact", 1),
    ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1), ("noun.communication", 1),
    ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1),
    ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1),
    ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1), ("noun.process", 1),
    ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1), ("noun.state", 1),
    ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
)


def lexnames_text() -> str:
    """The `lexnames` file NLTK reads: `NN<TAB>name<TAB>category`, one lexicographer file a line."""
    return "".join(f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(LEXNAMES))


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copies src to dst atomically unless dst already has the same size (idempotent, no torn files)."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return
    atomic_write_bytes(dst, src.read_bytes())


def _write_if_changed(dst: Path, text: str) -> None:
    if dst.is_file() and dst.read_text(encoding="utf-8") == text:
        return
    atomic_write_bytes(dst, text.encode("utf-8"))


def _use_nltk_data(root: Path) -> None:
    """Puts root first on NLTK's search path (this process and child processes)."""
    import nltk

    root_str = str(root)
    if root_str in nltk.data.path:
        nltk.data.path.remove(root_str)
    nltk.data.path.insert(0, root_str)
    others = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != root_str]
    os.environ["NLTK_DATA"] = os.pathsep.join([root_str, *others])


def ensure_nltk_data(dest: Path | None = None, *, source: Path = DEBIAN_WORDNET_DIR) -> Path:
    """Builds (or repairs) `<dest>/corpora/wordnet/` from the Debian WordNet files and points NLTK at dest.

    dest defaults to `<cache_dir()>/nltk_data`. Returns dest. Raises FileNotFoundError naming
    the Debian package to install when a source file is missing.
    """
    missing = {pkg for name, pkg in WORDNET_FILES.items() if not (source / name).is_file()}
    if missing:
        files = ", ".join(str(source / n) for n, pkg in WORDNET_FILES.items() if pkg in missing)
        raise FileNotFoundError(
            f"WordNet files missing ({files}): install the Debian package(s) "
            f"{' '.join(sorted(missing))} (apt-get install wordnet-base wordnet-sense-index)")
    root = Path(dest) if dest is not None else cache_dir() / "nltk_data"
    corpus = root / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        _copy_if_changed(source / name, corpus / name)
    _write_if_changed(corpus / "lexnames", lexnames_text())
    _use_nltk_data(root)
    return root
