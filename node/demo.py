"""A small demo clip made on the spot, so a new node has something to play.

A vertical 360x640 H.264 MP4 of a few seconds with a moving colour pattern
and a tone, written with PyAV (FFmpeg) with ``+faststart`` so a browser can
start playing before the whole file has arrived.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av

WIDTH, HEIGHT, FPS = 360, 640, 30


def _frame_bytes(index: int, line_size: int) -> bytes:
    """An RGB frame: diagonal colour bands that slide one step per frame, and a bar that moves down."""
    pad = b"\0" * (line_size - WIDTH * 3)
    period = 96
    row = bytearray()
    for x in range(WIDTH + period):
        phase = (x * 3) % period
        row += bytes(((phase * 8) % 256, (128 + phase * 5) % 256, (255 - phase * 2) % 256))
    pixels = bytearray()
    bar = (index * 7) % HEIGHT
    for y in range(HEIGHT):
        if bar <= y < bar + 24:
            pixels += b"\xff\xff\xff" * WIDTH + pad
        else:
            shift = ((y + index * 4) % period) * 3
            pixels += row[shift : shift + WIDTH * 3] + pad
    return bytes(pixels)


def _tone(n: int, samples: int) -> av.AudioFrame:
    """The ``n``-th frame of ``samples`` samples of a 440 Hz tone, mono, 44.1 kHz."""
    sound = av.AudioFrame(format="s16", layout="mono", samples=samples)
    tone = bytearray()
    for s in range(samples):
        t = (n * samples + s) / 44100
        tone += int(6000 * math.sin(2 * math.pi * 440 * t)).to_bytes(2, "little", signed=True)
    sound.planes[0].update(bytes(tone))
    sound.sample_rate = 44100
    sound.pts = n * samples
    sound.time_base = Fraction(1, 44100)
    return sound


def make_demo_clip(path: Path, seconds: int = 6, video_kbps: int | None = None) -> Path:
    """Write the clip to ``path`` (atomically) and return it.

    ``video_kbps`` makes the video constant-bitrate at that rate (x264 pads with
    filler data), for tests and benchmarks that need a clip of a given size.
    """
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "28"}
        if video_kbps:
            rate = f"bitrate={video_kbps}:vbv-maxrate={video_kbps}:vbv-bufsize={video_kbps}:nal-hrd=cbr"
            video.options = {"preset": "veryfast", "x264-params": rate}
        audio = container.add_stream("aac", rate=44100)
        audio.layout = "mono"
        # Audio and video go in by time, as encoders write real clips: all the video and then all the audio put
        # a 20 s clip's first audio packet half-way through the file (the muxer interleaves only within 10 s),
        # and Chromium read 5 MB (FFmpeg's probe) before it had the clip's metadata.
        samples = 1024
        sound_frames = seconds * 44100 // samples
        sound_next = 0
        for i in range(seconds * FPS):
            frame = av.VideoFrame(WIDTH, HEIGHT, "rgb24")
            frame.planes[0].update(_frame_bytes(i, frame.planes[0].line_size))
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in video.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
            while sound_next < sound_frames and sound_next * samples * FPS <= (i + 1) * 44100:
                for packet in audio.encode(_tone(sound_next, samples)):
                    container.mux(packet)
                sound_next += 1
        while sound_next < sound_frames:
            for packet in audio.encode(_tone(sound_next, samples)):
                container.mux(packet)
            sound_next += 1
        for packet in video.encode():
            container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
