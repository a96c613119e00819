"""Encoding synthesised audio for HTTP: whole files, and incremental streams.

soundfile (libsndfile >= 1.1) writes WAV, FLAC, MP3 and Ogg/Opus, so no extra codec
library is needed.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

FORMATS: dict[str, tuple[str, str | None, str]] = {
    # name: (libsndfile format, subtype, content type)
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "opus": ("OGG", "OPUS", "audio/ogg"),
    "pcm": ("RAW", "PCM_16", "audio/pcm"),
}
# Formats whose pieces can be sent as they are made and still play as one stream.
STREAMABLE = ("wav", "pcm", "mp3")
# Formats whose encoding is a conversion to 16-bit samples and at most a header.
UNCOMPRESSED = ("wav", "pcm")
# Float full scale as 16-bit PCM: symmetric, so +1 and -1 are equally loud.
PCM_SCALE = 32767.0


def content_type(fmt: str) -> str:
    return FORMATS[fmt][2]


def to_int16(audio: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Float samples to 16-bit PCM: clipped to [-1, 1], rounded, NaN as silence.

    One float32 temporary, converted in place and then cast into ``out`` (the body of a
    response, where given) or a new array.  It is on every request's path: with the waveform
    fresh from the GPU (not in the CPU's caches) the former version, which also made a mask,
    took 0.66 ms for ten seconds of audio on the dev box (bench/NOTES.md item 40).
    """
    x = np.multiply(audio, np.float32(PCM_SCALE), dtype=np.float32)
    np.clip(x, -PCM_SCALE, PCM_SCALE, out=x)  # NaN stays NaN, +-inf become +-32767
    np.rint(x, out=x)
    if np.isnan(x.max(initial=0.0)):  # a reduction without a temporary finds any NaN
        x[np.isnan(x)] = 0.0
    if out is None:
        return x.astype("<i2")
    np.copyto(out, x, casting="unsafe")
    return out


def to_pcm16(audio: np.ndarray, pcm: np.ndarray | None = None, header: bytes = b"") -> bytearray:
    """``header`` then the 16-bit samples, in the one buffer that is sent (libsndfile wrote WAV
    through a BytesIO, then copied it out: 0.5 ms more).  ``pcm`` is ``to_int16(audio)`` where
    it is already known (the engine makes it beside the waveform); otherwise it is converted in
    place here."""
    body = bytearray(len(header) + 2 * len(audio))
    body[: len(header)] = header
    samples = np.frombuffer(body, dtype="<i2", offset=len(header))
    if pcm is None:
        to_int16(audio, samples)
    else:
        samples[:] = pcm
    return body


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """A 44-byte header of 16-bit mono PCM; 0xFFFFFFFF sizes for a stream of unknown length."""
    riff = min(36 + data_bytes, 0xFFFFFFFF)
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_bytes)
    )


def encode(audio: np.ndarray, sample_rate: int, fmt: str, pcm: np.ndarray | None = None) -> bytes | bytearray:
    """``audio`` (float32) as a file of ``fmt``; ``pcm``, where given, is ``to_int16(audio)``
    already made (the engine's), for the formats that carry it as it is."""
    if fmt == "pcm":
        return to_pcm16(audio, pcm)
    if fmt == "wav":
        return to_pcm16(audio, pcm, _wav_header(sample_rate, 2 * len(audio)))
    major, subtype, _ = FORMATS[fmt]
    buf = io.BytesIO()
    data: np.ndarray
    if subtype == "PCM_16":
        # One float->int16 conversion for every 16-bit format, so pcm, wav and flac carry
        # the same samples (libsndfile's own conversion rounds differently).
        data = to_int16(audio) if pcm is None else pcm
    else:
        data = np.clip(np.nan_to_num(audio.astype(np.float32), nan=0.0), -1.0, 1.0)
    sf.write(buf, data, sample_rate, format=major, subtype=subtype)
    return buf.getvalue()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown length", as streaming servers do."""
    return _wav_header(sample_rate, 0xFFFFFFFF)


def stream_piece(audio: np.ndarray, sample_rate: int, fmt: str, pcm: np.ndarray | None = None) -> bytes | bytearray:
    """Bytes for one streamed piece (the header, if any, is sent separately); ``pcm`` as in
    :func:`encode`."""
    if fmt in ("wav", "pcm"):
        return to_pcm16(audio, pcm)
    # MP3 frames are self-contained: pieces encoded apart concatenate into one playable stream.
    return encode(audio, sample_rate, fmt)
