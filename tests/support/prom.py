"""Read a Prometheus /metrics endpoint the way Prometheus does (prometheus-client's own
text parser), for tests that check that names exist and values move."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "scrape"]


@dataclass(frozen=True)
class Scrape:
    families: frozenset[str]  # every name with a HELP/TYPE, samples or not (counters: no _total)
    samples: tuple[tuple[str, dict[str, str], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`; 0 when none (an
        absent child of a labelled counter has counted nothing yet)."""
        return sum(
            v
            for n, ls, v in self.samples
            if n == name and all(ls.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        """A sample of `name` with these labels is published (at any value, 0 included)."""
        return any(
            n == name and all(ls.get(k) == want for k, want in labels.items())
            for n, ls, _ in self.samples
        )

    def label_values(self) -> set[str]:
        return {v for _, ls, _ in self.samples for v in ls.values()}


def parse(text: str) -> Scrape:
    families = set()
    samples = []
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples.append((sample.name, dict(sample.labels), float(sample.value)))
    return Scrape(frozenset(families), tuple(samples))


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return parse(resp.read().decode())
