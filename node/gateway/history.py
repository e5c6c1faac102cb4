"""The console's charts over time, in memory: rings of samples of the node's counters and gauges.

Pure bookkeeping, no I/O and no clock of its own: the caller (the console's sampler,
``node/gateway/console.py``) reads the counters every few seconds and hands them in with the time it read
them, and tests hand in explicit timestamps.

A *counter* only grows (bytes served over HTTP, over Bitswap, by viewers); the charts show its rate, the
increase between two samples over the seconds between them. A counter that went down was reset (as
Prometheus assumes): the increase is then its new value. A *gauge* (bytes on disk, peers) is shown as it
was sampled.

``History`` keeps several rings at once, each with its own step and span (by default every sample for an
hour, and one a minute for a day); a series is read from the finest ring that covers the span asked for.
A sample whose time is not after the last one's is refused: time as the sampler counts it goes forward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

DEFAULT_TIERS = ((5.0, 3600.0), (60.0, 86400.0))  # (step, span) in seconds


class HistoryError(ValueError):
    """A sample or a tier the history cannot take (time not moving forward, a step that is not positive)."""


@dataclass(frozen=True)
class Sample:
    at: float  # seconds (the sampler's clock: wall time kept monotonic)
    counters: Mapping[str, float]
    gauges: Mapping[str, float]


def increase(before: float, after: float) -> float:
    """How much a counter grew from ``before`` to ``after``; a counter that went down was reset to zero."""
    return after - before if after >= before else after


class Ring:
    """Samples at least ``step`` seconds apart covering ``span`` seconds, the oldest dropped first.

    One sample older than the span is kept, so the first interval inside the span has a rate too."""

    def __init__(self, step: float, span: float) -> None:
        if step <= 0 or span < step:
            raise HistoryError(f"a ring needs 0 < step <= span, got step {step} and span {span}")
        self.step = step
        self.span = span
        self._samples: deque[Sample] = deque(maxlen=int(span / step) + 2)

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def last(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def offer(self, sample: Sample) -> bool:
        """Keep ``sample`` if it is at least ``step`` after the last one kept (a little less is allowed for
        a sampler's jitter); whether it was kept."""
        last = self.last
        if last is not None and sample.at - last.at < self.step * 0.9:
            return False
        self._samples.append(sample)
        while len(self._samples) > 2 and self._samples[1].at <= sample.at - self.span:
            self._samples.popleft()
        return True

    def covers(self, span: float) -> bool:
        return self.span >= span

    def series(self, span: float, now: float | None = None) -> dict[str, Any]:
        """The last ``span`` seconds before ``now`` (default: the last sample): ``t`` the end of each
        interval, ``rates`` per counter (per second over the interval, None where a sample lacked it),
        ``gauges`` as sampled at ``t``, and ``totals``: each counter's increase over those intervals."""
        samples = list(self._samples)
        end = now if now is not None else (samples[-1].at if samples else 0.0)
        start = end - span
        names = sorted({name for s in samples for name in s.counters})
        gauge_names = sorted({name for s in samples for name in s.gauges})
        times: list[float] = []
        rates: dict[str, list[float | None]] = {name: [] for name in names}
        gauges: dict[str, list[float | None]] = {name: [] for name in gauge_names}
        totals = dict.fromkeys(names, 0.0)
        for before, after in pairwise(samples):
            if after.at <= start or after.at > end:
                continue
            seconds = after.at - before.at
            times.append(after.at)
            for name in names:
                if name in before.counters and name in after.counters:
                    grown = increase(before.counters[name], after.counters[name])
                    rates[name].append(grown / seconds)
                    totals[name] += grown
                else:
                    rates[name].append(None)
            for name in gauge_names:
                gauges[name].append(after.gauges.get(name))
        return {"step": self.step, "span": span, "t": times, "rates": rates, "gauges": gauges, "totals": totals}


class History:
    """Rings of samples at several resolutions; see the module docstring."""

    def __init__(self, tiers: Iterable[tuple[float, float]] = DEFAULT_TIERS) -> None:
        self.rings = sorted((Ring(step, span) for step, span in tiers), key=lambda ring: ring.step)
        if not self.rings:
            raise HistoryError("a history needs at least one ring")
        self._last_at: float | None = None

    @property
    def longest(self) -> float:
        return max(ring.span for ring in self.rings)

    def record(self, at: float, counters: Mapping[str, float], gauges: Mapping[str, float]) -> None:
        """One reading of the counters and gauges at ``at``; refused if ``at`` is not after the last one."""
        if self._last_at is not None and at <= self._last_at:
            raise HistoryError(f"sample at {at} is not after the last one at {self._last_at}")
        self._last_at = at
        sample = Sample(at, dict(counters), dict(gauges))
        for ring in self.rings:
            ring.offer(sample)

    def series(self, span: float, now: float | None = None) -> dict[str, Any]:
        """The last ``span`` seconds (at most the longest ring's) from the finest ring that covers them."""
        if span <= 0:
            raise HistoryError("the span must be positive")
        span = min(span, self.longest)
        ring = next(ring for ring in self.rings if ring.covers(span))
        return ring.series(span, now)
