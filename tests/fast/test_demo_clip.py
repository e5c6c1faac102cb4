"""The demo clip (``node/demo.py``): a playable MP4 whose audio and video are interleaved by time, as encoders
write real clips, so a browser has the clip's metadata after its first few hundred KB whatever its length."""

from __future__ import annotations

from pathlib import Path

import av

from node.demo import make_demo_clip


def test_a_clip_longer_than_the_muxers_interleave_window_is_still_interleaved_by_time(tmp_path: Path) -> None:
    # 12 s: past FFmpeg's 10 s max_interleave_delta, beyond which all-video-then-all-audio input came out
    # as video then audio (a 20 s clip's first audio packet was at 4.99 MB of 10.3).
    clip = make_demo_clip(tmp_path / "clip.mp4", 12, 2000)
    size = clip.stat().st_size
    with av.open(str(clip)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert container.duration is not None and abs(container.duration / 1e6 - 12) < 0.2
        packets = [
            (p.pos, p.stream.type, float(p.dts * p.time_base))
            for p in container.demux()
            if p.pos is not None and p.pos >= 0 and p.dts is not None
        ]
    first = {kind: min(pos for pos, k, _ in packets if k == kind) for kind in ("video", "audio")}
    assert first["audio"] < size * 0.05, (first, size)
    # In file order, neither stream runs more than a second ahead of the other.
    latest = {"video": 0.0, "audio": 0.0}
    for _, kind, at in sorted(packets):
        latest[kind] = max(latest[kind], at)
        other = "audio" if kind == "video" else "video"
        if latest[other] > 0:
            assert latest[kind] - latest[other] < 1.0, (kind, latest)
