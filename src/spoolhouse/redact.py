"""Redaction: values stored under a secret-looking key never reach a page.

A key is secret when, lower-cased and stripped of everything but letters and
digits, it contains one of the patterns (so ``api_key`` matches ``apiKey``,
``X-Api-Key`` and ``stripe_api_key``); a compiled regex is searched in the raw
key instead. The text of every value redacted from a job is collected, and
scrubbed from that job's other text too (error message, traceback, progress),
together with ``key=value`` / ``key: value`` pairs and URL passwords. That
second pass is best effort: a secret that a task copies into text under another
name and in another form cannot be recognised.

No Flask, no I/O: pure functions of their arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigurationError

#: Key patterns redacted when ``redact=`` is not given.
DEFAULT_REDACT: tuple[str, ...] = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "api_key",
    "private_key",
    "cookie",
    "credential",
)

#: What is shown in place of a redacted value.
MARK = "<redacted>"

# Shorter strings are not scrubbed from free text: replacing every "ab" in a
# traceback would shred it, and such values are not meaningful secrets.
_MIN_SECRET_TEXT = 3
_MAX_DEPTH = 64
_NUMBERS = frozenset({int, float, complex, bool, type(None)})
_PLAIN = _NUMBERS | {str, bytes}


class Redacted:
    """Stands in for a redacted value in decoded arguments and results."""

    __slots__ = ()

    def __repr__(self) -> str:
        return MARK


REDACTED = Redacted()


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


class Redactor:
    """Redacts by key pattern; see the module docstring for the rules.

    :param patterns: substrings (compared after normalisation) or compiled regexes.
    """

    def __init__(self, patterns: Iterable[str | re.Pattern[str]]) -> None:
        if isinstance(patterns, str):
            raise ConfigurationError(
                f"redact= takes a sequence of key patterns, e.g. redact=({patterns!r},), "
                "not a single string"
            )
        subs: list[str] = []
        regexes: list[re.Pattern[str]] = []
        for pattern in patterns:
            if isinstance(pattern, re.Pattern):
                regexes.append(pattern)
            elif isinstance(pattern, str) and _normal(pattern):
                subs.append(_normal(pattern))
            else:
                raise ConfigurationError(
                    f"redact= patterns are non-empty strings or compiled regexes, not {pattern!r}"
                )
        self._subs = tuple(subs)
        self._regexes = tuple(regexes)
        self._known: dict[str, bool] = {}  # is_secret, by key

    def is_secret(self, key: object) -> bool:
        """Whether values under ``key`` are hidden."""
        if not isinstance(key, str):
            return False
        known = self._known.get(key)
        if known is None:
            normal = _normal(key)
            known = any(s in normal for s in self._subs) or any(r.search(key) for r in self._regexes)
            if len(self._known) < 4096:
                self._known[key] = known
        return known

    def value(self, value: Any, secrets: set[str], _depth: int = 0) -> Any:
        """``value`` with the values of secret keys replaced by :data:`REDACTED`.

        Containers holding a secret key are copied; others are returned as they
        are. The text of each replaced value is added to ``secrets``.
        """
        kind = type(value)
        if kind in _PLAIN:
            return value
        if _depth > _MAX_DEPTH:
            return REDACTED  # deeper than any sane payload: show nothing rather than walk on
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if self.is_secret(key):
                    collect(item, secrets)
                    out[key] = REDACTED
                else:
                    out[key] = self.value(item, secrets, _depth + 1)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            if all(type(item) in _PLAIN for item in value):
                return value  # the common case of a long list of numbers or strings: no copy
            items = [self.value(item, secrets, _depth + 1) for item in value]
            if isinstance(value, list):
                return items
            if isinstance(value, tuple):
                return tuple(items)
            try:
                return frozenset(items) if isinstance(value, frozenset) else set(items)
            except TypeError:  # a redacted dict inside a set: unhashable; fall back to a list
                return items
        return value

    def strings(
        self, value: Any, secrets: Iterable[str], *, limit: int | None = None, _depth: int = 0
    ) -> Any:
        """``value`` with :meth:`text` applied to every string in it.

        Run before formatting, so that clipping a long string can never leave half
        a secret on the page. With ``limit``, containers keep their first
        ``limit`` items only (for one-line previews, which show fewer).
        """
        kind = type(value)
        if kind is str:
            return self.text(value, secrets)
        if kind in _PLAIN:
            return value
        if _depth > _MAX_DEPTH:
            return REDACTED
        if isinstance(value, Mapping):
            pairs = list(value.items()) if limit is None else list(value.items())[:limit]
            return {
                (self.text(k, secrets) if isinstance(k, str) else k):
                    self.strings(v, secrets, limit=limit, _depth=_depth + 1)
                for k, v in pairs
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value) if limit is None else list(value)[:limit]
            if not all(type(item) in _NUMBERS for item in items):
                items = [self.strings(item, secrets, limit=limit, _depth=_depth + 1) for item in items]
            if isinstance(value, list):
                return items
            if isinstance(value, tuple):
                return tuple(items)
            try:
                return frozenset(items) if isinstance(value, frozenset) else set(items)
            except TypeError:
                return items
        return value

    def call(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        names: Sequence[str],
        secrets: set[str],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Redact a decoded call. ``names`` are the parameter names of the positional
        arguments when the task's signature is known, so that a password passed
        positionally is hidden too."""
        shown_args: list[Any] = []
        for index, arg in enumerate(args):
            if index < len(names) and self.is_secret(names[index]):
                collect(arg, secrets)
                shown_args.append(REDACTED)
            else:
                shown_args.append(self.value(arg, secrets))
        shown_kwargs = self.value(dict(kwargs), secrets)
        return tuple(shown_args), shown_kwargs

    def text(self, text: str, secrets: Iterable[str] = ()) -> str:
        """``text`` with every known secret value, secret ``key=value`` pair and URL password hidden."""
        for secret in sorted(set(secrets), key=len, reverse=True):
            for form in _forms(secret):
                if form in text:
                    text = text.replace(form, MARK)
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + MARK + "@", text)
        # The value is matched in a look-ahead, so that a pair whose key is not
        # secret ("failed: password=x") does not swallow the next pair.
        out: list[str] = []
        pos = 0
        for match in _PAIR.finditer(text):
            if match.start() < pos or not self.is_secret(match.group("key")):
                continue
            value = match.group("value")
            if value.strip("'\"") == MARK:
                continue
            out.append(text[pos:match.end()])
            out.append(MARK)
            pos = match.end() + len(value)
        out.append(text[pos:])
        return "".join(out)


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.\-]*+://[^/\s:@]*+:)[^@\s/]++@")
# ``key = value`` / ``"key": "value"`` in free text; whether ``key`` is secret is
# decided per match, and the value is only looked at (see Redactor.text).
# Possessive quantifiers and the look-behind keep this linear on long words.
_PAIR = re.compile(
    r"(?<![\w.\-])(?P<key>[\w.\-]++)[\"']?\s*+[=:]\s*+"
    r"(?=(?P<value>(?:(?:bearer|basic|token|digest)\s++)?"
    r"(?:\"(?:[^\"\\\n]|\\.)*+\"|'(?:[^'\\\n]|\\.)*+'|[^\s,;)}\]&\"']++)))",
    re.IGNORECASE,
)


def _forms(secret: str) -> list[str]:
    """The ways a string shows up in text: itself, as repr() and as JSON escapes it."""
    forms = [secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]]
    return [f for f in dict.fromkeys(forms) if len(f) >= _MIN_SECRET_TEXT]


def collect(value: Any, secrets: set[str], _depth: int = 0) -> None:
    """Add the text of every leaf of ``value`` to ``secrets``."""
    if _depth > _MAX_DEPTH or value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) >= _MIN_SECRET_TEXT:
            secrets.add(value)
    elif isinstance(value, bytes | bytearray):
        collect(bytes(value).decode("utf-8", "replace"), secrets, _depth + 1)
        collect(repr(bytes(value))[2:-1], secrets, _depth + 1)
    elif isinstance(value, int | float):
        if len(str(value)) > _MIN_SECRET_TEXT:
            secrets.add(str(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            collect(item, secrets, _depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            collect(item, secrets, _depth + 1)
    else:
        collect(str(value), secrets, _depth + 1)
