"""The console's time series (node.gateway.history): rates from counters, gauges, rings and their spans."""

from __future__ import annotations

import pytest

from node.gateway.history import History, HistoryError, Ring, Sample, increase

T0 = 1_700_000_000.0


def test_rates_are_increases_over_the_seconds_between_samples() -> None:
    history = History([(5.0, 3600.0)])
    history.record(T0, {"http": 0}, {"used": 100})
    history.record(T0 + 5, {"http": 5000}, {"used": 150})
    history.record(T0 + 10, {"http": 5000}, {"used": 150})
    history.record(T0 + 20, {"http": 25000}, {"used": 90})
    series = history.series(3600)
    assert series["step"] == 5.0
    assert series["t"] == [T0 + 5, T0 + 10, T0 + 20]
    assert series["rates"]["http"] == [1000.0, 0.0, 2000.0]
    assert series["gauges"]["used"] == [150, 150, 90]
    assert series["totals"]["http"] == 25000


def test_a_single_sample_has_no_rate_yet() -> None:
    history = History([(5.0, 60.0)])
    history.record(T0, {"http": 10}, {"used": 1})
    series = history.series(60)
    assert series["t"] == [] and series["rates"] == {"http": []} and series["totals"] == {"http": 0.0}


def test_a_counter_that_went_down_was_reset() -> None:
    assert increase(100, 250) == 150
    assert increase(250, 40) == 40
    history = History([(1.0, 60.0)])
    history.record(T0, {"bitswap": 900}, {})
    history.record(T0 + 2, {"bitswap": 100}, {})
    assert history.series(60)["rates"]["bitswap"] == [50.0]


def test_a_counter_missing_from_a_sample_has_no_rate_there() -> None:
    history = History([(1.0, 60.0)])
    history.record(T0, {"http": 0}, {})
    history.record(T0 + 1, {"http": 10, "viewers": 0}, {})
    history.record(T0 + 2, {"http": 20, "viewers": 30}, {})
    series = history.series(60)
    assert series["rates"]["http"] == [10.0, 10.0]
    assert series["rates"]["viewers"] == [None, 30.0]


def test_time_must_move_forward() -> None:
    history = History([(1.0, 60.0)])
    history.record(T0, {"http": 0}, {})
    with pytest.raises(HistoryError):
        history.record(T0, {"http": 1}, {})
    with pytest.raises(HistoryError):
        history.record(T0 - 1, {"http": 1}, {})
    history.record(T0 + 1, {"http": 1}, {})
    assert history.series(60)["t"] == [T0 + 1]


def test_a_ring_forgets_what_is_older_than_its_span_but_one() -> None:
    ring = Ring(5.0, 60.0)
    for i in range(100):
        ring.offer(Sample(T0 + 5 * i, {"c": float(i)}, {}))
    assert len(ring) <= 60 / 5 + 2
    series = ring.series(60)
    # the last 60 s: 12 intervals of 5 s, each the counter's 1 per 5 s
    assert series["t"] == [T0 + 5 * i for i in range(88, 100)]
    assert series["rates"]["c"] == [0.2] * 12
    assert series["totals"]["c"] == 12


def test_a_ring_skips_samples_closer_than_its_step() -> None:
    ring = Ring(60.0, 3600.0)
    assert ring.offer(Sample(T0, {"c": 0}, {}))
    assert not ring.offer(Sample(T0 + 5, {"c": 5}, {}))
    assert ring.offer(Sample(T0 + 55, {"c": 55}, {}))  # within the jitter allowed
    assert not ring.offer(Sample(T0 + 60, {"c": 60}, {}))
    assert ring.offer(Sample(T0 + 120, {"c": 120}, {}))
    assert ring.series(3600)["rates"]["c"] == [1.0, 1.0]


def test_the_finest_ring_that_covers_the_span_answers() -> None:
    history = History([(60.0, 86400.0), (5.0, 3600.0)])
    for i in range(2000):  # 10000 s of one sample each 5 s, the counter growing 10 per second
        history.record(T0 + 5 * i, {"http": 50.0 * i}, {"used": float(i)})
    fine = history.series(600)
    assert fine["step"] == 5.0 and len(fine["t"]) == 120
    assert all(rate == 10.0 for rate in fine["rates"]["http"])
    coarse = history.series(7200)
    assert coarse["step"] == 60.0
    assert all(rate == pytest.approx(10.0) for rate in coarse["rates"]["http"])
    assert coarse["t"][-1] - coarse["t"][0] <= 7200
    # longer than the longest ring: the longest ring's span
    assert history.series(10**9)["span"] == 86400.0


def test_a_window_ending_earlier_than_the_last_sample() -> None:
    history = History([(1.0, 100.0)])
    for i in range(11):
        history.record(T0 + i, {"c": float(i * i)}, {"g": float(i)})
    series = history.series(3, now=T0 + 5)
    assert series["t"] == [T0 + 3, T0 + 4, T0 + 5]
    assert series["rates"]["c"] == [5.0, 7.0, 9.0]
    assert series["gauges"]["g"] == [3.0, 4.0, 5.0]


@pytest.mark.parametrize(("step", "span"), [(0.0, 10.0), (-1.0, 10.0), (10.0, 5.0)])
def test_rings_need_a_positive_step_within_their_span(step: float, span: float) -> None:
    with pytest.raises(HistoryError):
        Ring(step, span)


def test_a_history_needs_a_ring_and_a_positive_span() -> None:
    with pytest.raises(HistoryError):
        History([])
    with pytest.raises(HistoryError):
        History().series(0)
