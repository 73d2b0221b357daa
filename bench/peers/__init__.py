"""Helpers for ``bench/compare.py``: one app module per system, the probe the
no-op tasks call, the client-side helper and the chart.

These modules run in two interpreters: the Spoolhouse ones in the project's
virtualenv, the peers' ones (and the chart) in ``bench/.venv-peers``. The
driver, ``bench/compare.py``, only imports ``systems`` and ``probe``, which
use the standard library alone.
"""
