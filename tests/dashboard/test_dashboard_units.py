"""The pure parts: the chart's geometry, the redactor, time and size helpers."""

from __future__ import annotations

import re
import time

import pytest

from spoolhouse.dashboard.chart import nice_ceiling, throughput_chart
from spoolhouse.dashboard.present import ago, clip, when
from spoolhouse.redact import DEFAULT_REDACT, MARK, REDACTED, Redactor

NOW = 1_700_000_000.0  # 22:13:20 UTC: minute 28333333 started at 1_699_999_980


# -- chart ---------------------------------------------------------------------------------
def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 60, 101, 4999)] == [
        1, 1, 2, 5, 10, 10, 20, 100, 200, 5000]


def test_chart_places_minutes_and_totals() -> None:
    minute = 60 * (NOW // 60)
    stats = [
        (minute - 3600, 99, 99, 99),  # a minute before the window: left out
        (minute - 120, 8, 2, 1),
        (minute, 1, 0, 0),  # the current minute is the last bar
    ]
    chart = throughput_chart(stats, now=NOW)
    assert (chart.succeeded, chart.failed, chart.retried) == (9, 2, 1)
    assert chart.failure_rate == pytest.approx(2 / 11)
    assert len(chart.bars) == 2
    first, last = chart.bars
    assert [s.kind for s in first.segments] == ["succeeded", "failed", "retried"]
    assert first.title.endswith("8 succeeded, 2 failed, 1 retried")
    assert last.x > first.x
    assert last.x + last.width <= chart.left + chart.plot_width
    # the tallest bar (11) fits a scale of 20; segments stack upwards from the baseline
    bottom = chart.top + chart.plot_height
    assert first.segments[0].y + first.segments[0].height == pytest.approx(bottom, abs=0.02)
    total = sum(s.height for s in first.segments)
    assert total == pytest.approx(chart.plot_height * 11 / 20, abs=0.05)
    assert [label for _, label in chart.y_ticks] == ["0", "10", "20"]
    assert [label for _, label in chart.x_ticks] == ["-60m", "-45m", "-30m", "-15m", "now"]
    assert len(chart.rate) == 2 and chart.rate_polyline.count(",") == 2


def test_an_empty_chart() -> None:
    chart = throughput_chart([], now=NOW)
    assert chart.empty and chart.failure_rate is None and chart.bars == ()
    assert [label for _, label in chart.y_ticks] == ["0", "1"]


# -- redactor ------------------------------------------------------------------------------
@pytest.fixture
def redactor() -> Redactor:
    return Redactor(DEFAULT_REDACT)


def test_secret_keys(redactor: Redactor) -> None:
    for key in ("password", "PASSWORD", "db_password", "X-Api-Key", "apiKey", "api-key",
                "Authorization", "refresh_token", "client_secret", "session_cookie"):
        assert redactor.is_secret(key), key
    for key in ("user", "email", "keyboard", "passage", 3, None):
        assert not redactor.is_secret(key), key


def test_value_redacts_nested_keys_and_collects_the_values(redactor: Redactor) -> None:
    secrets: set[str] = set()
    value = {"user": "bob", "auth": [{"token": "abc123"}, {"password": {"old": "o1d-pw", "n": 123456}}]}
    shown = redactor.value(value, secrets)
    assert shown == {"user": "bob", "auth": [{"token": REDACTED}, {"password": REDACTED}]}
    assert secrets == {"abc123", "o1d-pw", "123456"}
    assert value["auth"][0]["token"] == "abc123"  # the original is untouched


def test_call_redacts_positional_arguments_by_parameter_name(redactor: Redactor) -> None:
    secrets: set[str] = set()
    args, kwargs = redactor.call(("bob", "hunter22"), {"api_key": "k"}, ["user", "password"], secrets)
    assert args == ("bob", REDACTED) and kwargs == {"api_key": REDACTED}
    assert secrets == {"hunter22"}  # "k" is too short to scrub from text


def test_text_scrubs_known_values_in_every_form(redactor: Redactor) -> None:
    secret = "it's-a \"secret\""
    text = f"raise ValueError({secret!r}) / json {{\"x\": {__import__('json').dumps(secret)}}} / {secret}"
    scrubbed = redactor.text(text, {secret})
    assert "secret\"" not in scrubbed and "it's-a" not in scrubbed and "it\\'s-a" not in scrubbed
    assert scrubbed.count(MARK) == 3


@pytest.mark.parametrize(("text", "hidden"), [
    ("login failed: password=hunter2 for bob", "hunter2"),
    ("token: abc.def.ghi", "abc.def.ghi"),
    ('{"api_key": "sk-live-123", "user": "bob"}', "sk-live-123"),
    ("headers {'Authorization': 'Bearer eyJhbGciOi'}", "eyJhbGciOi"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("connect postgresql://app:pa55word@db:5432/x failed", "pa55word"),
    ("client_secret = 'qwerty123'", "qwerty123"),
])
def test_text_scrubs_secret_pairs_and_url_passwords(redactor: Redactor, text: str, hidden: str) -> None:
    scrubbed = redactor.text(text)
    assert hidden not in scrubbed and MARK in scrubbed


def test_text_leaves_ordinary_text_alone(redactor: Redactor) -> None:
    text = "ValueError: user=bob, count: 3 (see https://example.org/x)"
    assert redactor.text(text) == text


def test_text_is_linear_on_long_words(redactor: Redactor) -> None:
    text = ("a" * 200_000 + " ") * 3 + "b=" + "c" * 100_000
    started = time.perf_counter()
    redactor.text(text, {"zzzz"})
    assert time.perf_counter() - started < 2.0


def test_strings_limit_keeps_previews_small(redactor: Redactor) -> None:
    value = {"items": list(range(10_000)), "names": [f"n{i}" for i in range(10_000)]}
    shown = redactor.strings(value, set(), limit=8)
    assert shown == {"items": list(range(8)), "names": [f"n{i}" for i in range(8)]}


def test_bad_patterns_are_refused() -> None:
    from spoolhouse.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Redactor("password")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Redactor(["", "ok"])
    assert Redactor([re.compile("^pin$")]).is_secret("pin")


# -- time and size -------------------------------------------------------------------------
def test_time_helpers() -> None:
    assert when(NOW) == "2023-11-14 22:13:20 UTC" and when(None) == "-"
    assert ago(NOW - 5, NOW) == "5s ago"
    assert ago(NOW + 180, NOW) == "in 3m"
    assert ago(NOW - 7500, NOW) == "2h 5m ago"
    assert ago(NOW - 90000, NOW) == "1d 1h ago"


def test_clip() -> None:
    assert clip("abc", 5) == "abc"
    assert clip("abcdefgh", 3) == "abc… (5 more characters)"
