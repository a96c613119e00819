"""Reference voices: decode, clean and cache a reference clip once per content.

Torch-free: this module turns a file into a clean 24 kHz numpy clip; the engine computes the
mel from it.  Everything happens in memory (the file is read once, hashed, and decoded from
those bytes), so there are no temp files and no second read.

The clean-up follows upstream's ``preprocess_ref_audio_text`` (pydub-based) in numpy:
clip to at most 12 s at a silence (first at a >= 1 s pause below -50 dBFS, then at a >= 0.1 s
pause below -40 dBFS, keeping at least 6 s, else a hard cut), trim silent edges (10 ms windows
below -42 dBFS) and append 50 ms of silence.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .paths import default_ref_audio
from .presets import HOP_LENGTH
from .spec import DEFAULT_VOICE_TEXT, SAMPLE_RATE, VoiceSpec
from .text import normalize_text, reference_text

log = logging.getLogger("ishowttsd.engine")

MAX_INPUT_SECONDS = 30.0
MAX_REFERENCE_SECONDS = 12.0
MIN_REFERENCE_SECONDS = 0.5
_KEEP_AT_LEAST_S = 6.0
_WINDOW = SAMPLE_RATE // 100  # 10 ms, pydub's silence granularity
_EDGE_DBFS = -42.0
_SILENT_DBFS = -60.0  # loudest 10 ms window below this: the clip holds no usable speech
_TAIL_SILENCE_S = 0.05


class ReferenceError(Exception):
    """A reference clip cannot be used; the message says why (the engine adds the voice id)."""


@dataclass(frozen=True)
class Reference:
    """A cleaned reference clip, shared by every voice with the same file bytes and transcript."""

    key: str  # sha256 of the file bytes and the transcript
    source: str  # the path it came from, for messages
    audio: np.ndarray  # float32 mono 24 kHz, clipped and trimmed, NOT yet RMS-normalised
    rms: float
    text: str  # the transcript as the model sees it (see text.reference_text)
    clipped_from_s: float | None = None  # set when the input was longer than 12 s

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def frames(self) -> int:
        """Mel frames upstream counts for the reference (len // hop, one less than the mel has)."""
        return len(self.audio) // HOP_LENGTH


@dataclass(frozen=True)
class PreparedVoice:
    """A configured voice, ready for synthesis.  Cheap to hold; the reference is shared."""

    spec: VoiceSpec
    reference: Reference

    @property
    def id(self) -> str:
        return self.spec.id


def _frame_dbfs(audio: np.ndarray) -> np.ndarray:
    """dBFS of each whole 10 ms window (as pydub measures it: RMS against full scale 1.0)."""
    n = len(audio) // _WINDOW
    if n == 0:
        return np.full(1, -np.inf if not len(audio) else 20 * np.log10(max(_rms(audio), 1e-12)))
    frames = audio[: n * _WINDOW].reshape(n, _WINDOW).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0


def _pause_midpoints(db: np.ndarray, threshold: float, min_windows: int) -> list[int]:
    """Sample offsets of the middle of each run of >= min_windows windows below threshold."""
    quiet = np.concatenate([[False], db < threshold, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return [int((s + e) // 2) * _WINDOW for s, e in zip(starts, ends, strict=True) if e - s >= min_windows]


def clip_at_pause(audio: np.ndarray) -> np.ndarray:
    """At most 12 s, cut in a pause when one falls between 6 s and 12 s."""
    limit = int(MAX_REFERENCE_SECONDS * SAMPLE_RATE)
    if len(audio) <= limit:
        return audio
    db = _frame_dbfs(audio)
    floor = int(_KEEP_AT_LEAST_S * SAMPLE_RATE)
    for threshold, min_ms in ((-50.0, 1000), (-40.0, 100)):
        cuts = [c for c in _pause_midpoints(db, threshold, min_ms // 10) if floor <= c <= limit]
        if cuts:
            return audio[: max(cuts)]
    return audio[:limit]


def trim_edges(audio: np.ndarray) -> np.ndarray:
    """Drop leading and trailing 10 ms windows quieter than -42 dBFS."""
    db = _frame_dbfs(audio)
    loud = np.flatnonzero(db >= _EDGE_DBFS)
    if len(loud) == 0:
        return audio[:0]
    return audio[loud[0] * _WINDOW : min((loud[-1] + 1) * _WINDOW, len(audio))]


def _decode(data: bytes, source: str) -> np.ndarray:
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        raise ReferenceError(f"reference audio {source} is not a readable audio file ({exc})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise ReferenceError(f"reference audio {source} holds no audio")
    seconds = info.frames / info.samplerate
    if seconds > MAX_INPUT_SECONDS:
        raise ReferenceError(
            f"reference audio {source} is {seconds:.1f} s long; the limit is {MAX_INPUT_SECONDS:.0f} s "
            "(F5-TTS uses at most 12 s: cut a clean 5-12 s excerpt and its exact transcript)"
        )
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ReferenceError(f"reference audio {source} cannot be decoded ({exc})") from exc
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    if not np.all(np.isfinite(mono)):
        raise ReferenceError(f"reference audio {source} contains non-finite samples")
    return np.ascontiguousarray(mono, dtype=np.float32)


def clean(audio: np.ndarray, source: str) -> tuple[np.ndarray, float | None]:
    """Clip, trim and pad a decoded clip; raise ReferenceError if nothing usable is left."""
    db = _frame_dbfs(audio)
    if len(audio) == 0 or float(np.max(db)) < _SILENT_DBFS:
        raise ReferenceError(f"reference audio {source} is silent (no 10 ms window above {_SILENT_DBFS:.0f} dBFS)")
    original_s = len(audio) / SAMPLE_RATE
    clipped = clip_at_pause(audio)
    trimmed = trim_edges(clipped)
    if len(trimmed) < MIN_REFERENCE_SECONDS * SAMPLE_RATE:
        raise ReferenceError(
            f"reference audio {source} has only {len(trimmed) / SAMPLE_RATE:.2f} s above {_EDGE_DBFS:.0f} dBFS; "
            f"need at least {MIN_REFERENCE_SECONDS} s of speech"
        )
    padded = np.concatenate([trimmed, np.zeros(int(_TAIL_SILENCE_S * SAMPLE_RATE), dtype=np.float32)])
    return padded, (original_s if len(clipped) < len(audio) else None)


@dataclass
class ReferenceCache:
    """Content-addressed cache of cleaned references.  ``decode_count`` counts real decodes."""

    decode_count: int = 0
    _items: dict[str, Reference] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, audio_path: str, transcript: str) -> Reference:
        path = Path(audio_path) if audio_path else default_ref_audio()
        text = transcript if (audio_path or transcript) else DEFAULT_VOICE_TEXT
        if not normalize_text(text):
            raise ReferenceError("reference_text is empty; it must be the exact transcript of the clip")
        source = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ReferenceError(f"reference audio {source} not found") from None
        except IsADirectoryError:
            raise ReferenceError(f"reference audio {source} is a directory, not a file") from None
        except OSError as exc:
            raise ReferenceError(f"reference audio {source} cannot be read ({exc.strerror})") from exc
        digest = hashlib.sha256(data)
        digest.update(b"\0")
        digest.update(text.encode("utf-8"))
        key = digest.hexdigest()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None:
            return hit
        decoded = _decode(data, source)
        with self._lock:
            self.decode_count += 1
        audio, clipped_from = clean(decoded, source)
        if clipped_from is not None:
            log.warning(
                "reference clipped",
                extra={"source": source, "from_s": round(clipped_from, 2), "to_s": round(len(audio) / SAMPLE_RATE, 2)},
            )
        ref = Reference(
            key=key,
            source=source,
            audio=audio,
            rms=_rms(audio),
            text=reference_text(text),
            clipped_from_s=clipped_from,
        )
        with self._lock:
            self._items[key] = ref
        return ref

    def __len__(self) -> int:
        return len(self._items)
