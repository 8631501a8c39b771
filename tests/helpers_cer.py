"""Character error rate helpers shared by the extraction-quality tests.

``cer`` is Levenshtein distance / reference length after whitespace
normalisation (every run of whitespace becomes one space; ends stripped).
The distance is computed row by row with numpy: substitutions and deletions
are vectorised, and insertions along a row reduce to a running minimum
(D[j] = min_k (X[k] + j - k) = j + cummin(X[k] - k)), so a 2,000-character
page costs a few milliseconds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _WS.sub(" ", text).strip()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; all cost 1)."""
    if a == b:
        return 0
    if not a:
        return len(b)
    if not b:
        return len(a)
    if len(a) < len(b):
        a, b = b, a  # rows over the longer string, columns over the shorter
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    idx = np.arange(len(b) + 1, dtype=np.int64)
    prev = idx.copy()
    for i, ch in enumerate(a, start=1):
        cost = (bv != ord(ch)).astype(np.int64)
        x = np.empty_like(prev)
        x[0] = i
        # deletion (prev[j] + 1) or substitution/match (prev[j-1] + cost)
        np.minimum(prev[1:] + 1, prev[:-1] + cost, out=x[1:])
        # insertion: D[j] = min(x[j], D[j-1] + 1)  ->  j + cummin(x - j)
        prev = np.minimum.accumulate(x - idx) + idx
    return int(prev[-1])


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate of one text against its reference (normalised)."""
    hyp, ref = normalize(hypothesis), normalize(reference)
    if not ref:
        return 0.0 if not hyp else 1.0
    return levenshtein(hyp, ref) / len(ref)


def corpus_cer(pairs: Iterable[tuple[str, str]]) -> float:
    """Document-level CER: total edit distance / total reference characters."""
    dist = chars = 0
    for hyp, ref in pairs:
        h, r = normalize(hyp), normalize(ref)
        dist += levenshtein(h, r)
        chars += len(r)
    return dist / chars if chars else 0.0


_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased words (runs of letters and digits), as the OCR benchmark counts them."""
    return [w.lower() for w in _WORD.findall(text)]


def word_recall(hypothesis: str, reference: str) -> float:
    """Share of the reference's words found in the hypothesis, counted with multiplicity."""
    have = Counter(words(hypothesis))
    need = Counter(words(reference))
    total = sum(need.values())
    return sum(min(have[w], n) for w, n in need.items()) / total if total else 1.0
