"""Float audio to the bytes clients get: the int16 conversion and the WAV file around it."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from ishowttsd import audio_format


def test_to_int16_clips_rounds_and_silences_nan() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, np.nan, np.inf, -np.inf, 1e-5], dtype=np.float32)
    got = audio_format.to_int16(audio)
    assert got.dtype == np.dtype("<i2")
    assert got.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767, 0, 32767, -32767, 0]
    assert not np.isnan(audio[:7]).any() and np.isnan(audio[7]), "the input is left as it was"


def test_to_int16_takes_float64_too() -> None:
    audio = np.linspace(-1.2, 1.2, 1001)
    want = np.rint(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(audio_format.to_int16(audio), want)


def test_wav_carries_exactly_the_int16_samples() -> None:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(24000) * 0.4).astype(np.float32)
    body = audio_format.encode(audio, 24000, "wav")
    data, sr = sf.read(io.BytesIO(body), dtype="int16")
    assert sr == 24000
    np.testing.assert_array_equal(data, audio_format.to_int16(audio))
    assert audio_format.encode(audio, 24000, "pcm") == data.tobytes()


def test_pcm_made_elsewhere_is_sent_as_it_is() -> None:
    """Given the samples' 16-bit rendering (the engine makes it on the device), WAV, raw PCM,
    FLAC and stream pieces carry it as it is, and it equals what the host would convert."""
    audio = np.linspace(-0.9, 0.9, 4800, dtype=np.float32)
    marked = np.arange(4800, dtype=np.int16)  # not to_int16(audio): recognisable
    for fmt in ("wav", "flac"):
        data, _ = sf.read(io.BytesIO(audio_format.encode(audio, 24000, fmt, marked)), dtype="int16")
        np.testing.assert_array_equal(data, marked)
    assert audio_format.encode(audio, 24000, "pcm", marked) == marked.tobytes()
    assert audio_format.stream_piece(audio, 24000, "pcm", marked) == marked.tobytes()
    own = audio_format.to_int16(audio)
    assert audio_format.encode(audio, 24000, "wav", own) == audio_format.encode(audio, 24000, "wav")
