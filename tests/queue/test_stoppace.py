"""The pacing of stop orders (queue/stoppace.py; seed 000 §4.6): per pilot and per site,
each order's turn fixed when first seen, handed out with its delay once due before the
next heartbeat, held back (and so kept running) before that."""

from __future__ import annotations

from pilotage.queue.stoppace import StopPacer


def stops(*ids: str) -> list[tuple[str, str]]:
    return [(i, "removed") for i in ids]


def test_one_pilot_gets_one_order_per_interval_and_the_rest_later() -> None:
    pacer = StopPacer(per_pilot_s=0.5, per_site_s=0.0)
    out, held = pacer.pace("p1", "A", stops("c1", "c2", "c3", "c4"), now=100.0, horizon_s=1.0)
    assert [(o.claim_id, o.delay_s) for o in out] == [("c1", 0.0), ("c2", 0.5)]
    assert held == ["c3", "c4"]
    # At the next heartbeat the held ones come with what is left of their turn.
    out, held = pacer.pace("p1", "A", stops("c3", "c4"), now=101.2, horizon_s=1.0)
    assert [(o.claim_id, o.delay_s) for o in out] == [("c3", 0.0), ("c4", 0.3)]
    assert held == []


def test_pilots_of_one_site_share_its_rate_and_other_sites_do_not() -> None:
    pacer = StopPacer(per_pilot_s=0.0, per_site_s=1.0)
    a1, _ = pacer.pace("p1", "A", stops("c1", "c2"), now=0.0, horizon_s=10.0)
    a2, _ = pacer.pace("p2", "A", stops("c3"), now=0.0, horizon_s=10.0)
    b1, _ = pacer.pace("p3", "B", stops("c4"), now=0.0, horizon_s=10.0)
    assert [o.delay_s for o in a1 + a2] == [0.0, 1.0, 2.0]
    assert [o.delay_s for o in b1] == [0.0]


def test_the_slower_of_the_two_rates_wins() -> None:
    pacer = StopPacer(per_pilot_s=2.0, per_site_s=0.5)
    out, _ = pacer.pace("p1", "A", stops("c1", "c2", "c3"), now=0.0, horizon_s=10.0)
    assert [o.delay_s for o in out] == [0.0, 2.0, 4.0]
    other, _ = pacer.pace("p2", "A", stops("c4"), now=0.0, horizon_s=10.0)
    # Turns are given in order: the site's next slot is after c3's, never before it.
    assert [o.delay_s for o in other] == [4.5]


def test_zero_intervals_stop_everything_at_once() -> None:
    pacer = StopPacer(per_pilot_s=0.0, per_site_s=0.0)
    out, held = pacer.pace("p1", "A", stops(*[f"c{n}" for n in range(50)]), 0.0, 1.0)
    assert len(out) == 50 and held == [] and {o.delay_s for o in out} == {0.0}
