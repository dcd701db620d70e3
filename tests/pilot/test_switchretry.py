"""``--switch-retry``: the back-off of a passing 202 (pilot/switchretry.py) — randomised,
doubling, bounded by count and total time — and each bad setting refused by name."""

from __future__ import annotations

import random

import pytest

from pilotage.errors import OperatorError
from pilotage.pilot.switchretry import SwitchRetry


def test_waits_double_within_a_random_band_and_stop_at_the_count() -> None:
    retry = SwitchRetry(retries=3, base_s=1.0, total_s=100.0)
    draw = random.Random(7)
    waits = [retry.delay(n, 0.0, draw) for n in range(4)]
    assert waits[3] is None
    for n, wait in enumerate(waits[:3]):
        assert wait is not None and 0.5 * 2**n <= wait <= 1.5 * 2**n
    # Two pilots retrying at once do not wait alike.
    assert len({SwitchRetry().delay(0, 0.0) for _ in range(20)}) > 1


def test_no_retry_starts_past_the_total_time() -> None:
    retry = SwitchRetry(retries=10, base_s=1.0, total_s=5.0)
    assert retry.delay(0, 3.4) is not None  # at most 1.5 s: ends by 4.9 s
    assert retry.delay(0, 4.6) is None  # at least 0.5 s: past 5 s
    assert retry.delay(4, 0.0) is None  # at least 8 s


def test_parse_and_describe() -> None:
    retry = SwitchRetry.parse(["retries=2", "base_s=0.5", "exclude_s=60"])
    assert (retry.retries, retry.base_s, retry.total_s, retry.exclude_s) == (2, 0.5, 60.0, 60.0)
    assert SwitchRetry.parse(retry.describe().split(",")) == retry


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("tries=2", "is not KEY=VALUE, KEY one of base_s, exclude_s, retries, total_s"),
        ("retries", "is not KEY=VALUE"),
        ("retries=2.5", "'2.5' is not a whole number"),
        ("base_s=soon", "'soon' is not a number"),
        ("retries=-1", "retries=-1 must not be negative"),
        ("total_s=-3", "total_s=-3.0 must not be negative"),
    ],
)
def test_each_bad_setting_is_refused_by_name(item: str, words: str) -> None:
    with pytest.raises(OperatorError) as caught:
        SwitchRetry.parse([item])
    assert words in caught.value.message
