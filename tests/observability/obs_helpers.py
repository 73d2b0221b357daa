"""Helpers of the observability tests: parsing and scraping Prometheus text."""

from __future__ import annotations

import importlib
import os
import urllib.request
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; skip locally, fail in CI (where the dev extra installs it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed (pip install 'spoolhouse[{extra}]')"
        if IN_CI:
            pytest.fail(message + "; in CI a missing test dependency is a failure")
        pytest.skip(message)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample.value
    return out


def pick(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= set(k[1])}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample named ``name`` with exactly ``labels``."""
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(pick(samples, name, **labels).values())


def scrape(url: str, timeout: float = 10.0) -> tuple[int, str, Samples]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
        return response.status, text, parse_metrics(text)
