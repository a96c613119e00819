"""Reference voices: decoding, cleaning, content-hash caching and every bad-reference case."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ishowttsd.engine.errors import VoiceError
from ishowttsd.engine.paths import default_ref_audio
from ishowttsd.engine.spec import DEFAULT_VOICE_TEXT, VoiceSpec
from ishowttsd.engine.voices import ReferenceCache, ReferenceError

SR = 24000


def _speechlike(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """A loud, modulated tone: above every silence threshold for its whole length."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    ) + 0.01 * rng.standard_normal(len(t)).astype(np.float32)


def _write(path: Path, audio: np.ndarray, rate: int = SR) -> Path:
    sf.write(path, audio, rate)
    return path


def test_default_voice_is_the_shipped_clip(tiny_engine: Any, default_voice: Any) -> None:
    ref = default_voice.reference
    assert ref.source == str(default_ref_audio())
    assert ref.text == DEFAULT_VOICE_TEXT + "  "
    assert 4.0 < ref.seconds < 6.0
    assert ref.audio.dtype == np.float32
    assert ref.frames == len(ref.audio) // 256


def test_second_prepare_does_not_decode(tiny_engine: Any, default_voice: Any, tmp_path: Path) -> None:
    before = tiny_engine.decode_count
    again = tiny_engine.prepare_voice(VoiceSpec(id="default"))
    other_id = tiny_engine.prepare_voice(VoiceSpec(id="narrator", nfe=16))
    # same bytes under another path: the cache is by content, not by path
    copy = tmp_path / "copy.wav"
    shutil.copy(default_ref_audio(), copy)
    copied = tiny_engine.prepare_voice(
        VoiceSpec(id="copy", reference_audio=str(copy), reference_text=DEFAULT_VOICE_TEXT)
    )
    assert tiny_engine.decode_count == before
    assert again.reference is default_voice.reference
    assert other_id.reference is default_voice.reference and other_id.id == "narrator"
    assert copied.reference is default_voice.reference


def test_changed_transcript_is_a_new_reference(tiny_engine: Any, default_voice: Any) -> None:
    before = tiny_engine.decode_count
    voice = tiny_engine.prepare_voice(
        VoiceSpec(id="x", reference_audio=str(default_ref_audio()), reference_text="Some call me nature.")
    )
    assert tiny_engine.decode_count == before + 1
    assert voice.reference.key != default_voice.reference.key


def test_stereo_44k_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    left = _speechlike(2.0, 44100)
    path = _write(tmp_path / "stereo.flac", np.stack([left, left * 0.5], axis=1), 44100)
    ref = ReferenceCache().get(str(path), "hello there")
    # 2 s at 44.1 kHz -> about 2 s at 24 kHz, plus the 50 ms tail of silence
    assert abs(ref.seconds - 2.05) < 0.03
    assert np.all(ref.audio[-1200:] == 0)


def test_edges_are_trimmed(tmp_path: Path) -> None:
    audio = np.concatenate([np.zeros(SR), _speechlike(2.0), np.zeros(SR)])
    ref = ReferenceCache().get(str(_write(tmp_path / "padded.wav", audio)), "hi")
    assert abs(ref.seconds - 2.05) < 0.03


def test_long_reference_is_clipped_at_a_pause(tmp_path: Path) -> None:
    # 9 s of sound, a 1.5 s pause, 8 s of sound: clipped inside the pause, not at 12 s
    audio = np.concatenate([_speechlike(9.0), np.zeros(int(1.5 * SR), dtype=np.float32), _speechlike(8.0, seed=1)])
    ref = ReferenceCache().get(str(_write(tmp_path / "long.wav", audio)), "long one")
    assert ref.clipped_from_s == pytest.approx(18.5)
    assert abs(ref.seconds - 9.05) < 0.05


def test_long_reference_without_pause_is_cut_at_12s(tmp_path: Path) -> None:
    ref = ReferenceCache().get(str(_write(tmp_path / "drone.wav", _speechlike(20.0))), "drone")
    assert abs(ref.seconds - 12.05) < 0.03


def _bad(tmp_path: Path, kind: str) -> tuple[str, str]:
    if kind == "missing":
        return str(tmp_path / "nope.wav"), "text"
    if kind == "directory":
        return str(tmp_path), "text"
    if kind == "undecodable":
        path = tmp_path / "garbage.wav"
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
        return str(path), "text"
    if kind == "empty-file":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
        return str(path), "text"
    if kind == "silent":
        return str(_write(tmp_path / "silent.wav", np.zeros(3 * SR, dtype=np.float32))), "text"
    if kind == "too-long":
        return str(_write(tmp_path / "long.wav", _speechlike(31.0))), "text"
    if kind == "too-short":
        return str(_write(tmp_path / "blip.wav", np.concatenate([np.zeros(SR), _speechlike(0.2)]))), "text"
    if kind == "no-transcript":
        return str(_write(tmp_path / "ok.wav", _speechlike(2.0))), "  "
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "not found"),
        ("directory", "directory"),
        ("undecodable", "not a readable audio file"),
        ("empty-file", "not a readable audio file"),
        ("silent", "silent"),
        ("too-long", "31.0 s long"),
        ("too-short", "need at least"),
        ("no-transcript", "reference_text is empty"),
    ],
)
def test_bad_reference_fails_that_voice_clearly(tiny_engine: Any, tmp_path: Path, kind: str, reason: str) -> None:
    audio, transcript = _bad(tmp_path, kind)
    with pytest.raises(VoiceError) as info:
        tiny_engine.prepare_voice(VoiceSpec(id=f"bad-{kind}", reference_audio=audio, reference_text=transcript))
    message = str(info.value)
    assert f"'bad-{kind}'" in message
    assert reason in message
    # and the engine still serves other voices
    assert tiny_engine.prepare_voice(VoiceSpec(id="default")).reference.seconds > 4


def test_reference_error_is_not_an_engine_failure() -> None:
    # The cache raises its own error; the engine wraps it with the voice id.
    with pytest.raises(ReferenceError):
        ReferenceCache().get("/definitely/not/here.wav", "text")
