"""Reading a /metrics answer in tests: sample values by name and labels, and the names exported."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sample's value; 0.0 when the series does not exist yet (a counter never incremented)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def total(text: str, name: str, **labels: str) -> float:
    """Sum of every series of ``name`` whose labels include ``labels`` (whatever its other labels)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= set(ls))


def exported_names(text: str) -> set[str]:
    """Every series name a query may use: each declared family (``# TYPE``, with or without
    samples yet) with the suffixes its type adds (a histogram's _bucket, _sum and _count)."""
    names: set[str] = set()
    for name, kind in _TYPE.findall(text):
        names.add(name)
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ()))
    return names
