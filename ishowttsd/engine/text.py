"""Text handling: normalisation, chunking, duration estimates and cross-fading.

Pure Python and numpy (no torch), so it is cheap to test and to reason about.  The rules follow
f5-tts's ``infer_process``/``infer_batch_process`` (1.1.22) where they are about the model's
expectations (byte budgets, the reference-text suffix, the duration formula), because the
checkpoints were tuned against exactly those, and depart from it where upstream is merely rough
(it splits only at clause punctuation and never splits an over-long sentence).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ishowttsd import audio_format

from .presets import HOP_LENGTH

SAMPLE_RATE = 24000

# Upstream's budget is "the text that fits into 22 s of reference plus generated audio".
_BUDGET_SECONDS = 22.0
_MIN_BUDGET_BYTES = 24
# A stream's first chunk ends at the first clause boundary past this many bytes (about 2.5 s
# of speech: a few words with their own prosody, and time for the next chunk to come).
_FIRST_CHUNK_MIN_BYTES = 24
# Upstream gives very short texts (< 10 UTF-8 bytes) a slower local speed, or they come out clipped.
_SHORT_TEXT_BYTES = 10
_SHORT_TEXT_SPEED = 0.3

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+|(?<=[，；：、])")
_WHITESPACE = re.compile(r"\s+")


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def normalize_text(text: str) -> str:
    """NFC, control/format characters to spaces, whitespace runs collapsed, ends stripped.

    NFC and not NFKC: compatibility folding would turn full-width CJK punctuation (which the
    vocab has, and the chunker splits on) into ASCII.
    """
    text = unicodedata.normalize("NFC", text)
    cleaned = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            cleaned.append(" ")
        else:
            cleaned.append(char)
    return _WHITESPACE.sub(" ", "".join(cleaned)).strip()


def reference_text(transcript: str) -> str:
    """The reference transcript in the exact form upstream feeds the model.

    ``preprocess_ref_audio_text`` makes it end in ". " (or "。"), then ``infer_batch_process``
    appends one more space when the last character is one byte, so "...nature." becomes
    "...nature.  " with two spaces.  The released checkpoints were evaluated that way.
    """
    text = normalize_text(transcript)
    if not text.endswith(". ") and not text.endswith("。"):
        text = text + " " if text.endswith(".") else text + ". "
    if nbytes(text[-1]) == 1:
        text += " "
    return text


def chunk_budget(ref_text: str, ref_seconds: float, speed: float) -> int:
    """Upstream's per-chunk UTF-8 byte budget: the reference's bytes per second, times the
    seconds left in a 22 s window, times speed."""
    spare = max(_BUDGET_SECONDS - ref_seconds, 1.0)
    budget = int(nbytes(ref_text) / max(ref_seconds, 1e-3) * spare * speed)
    return max(budget, _MIN_BUDGET_BYTES)


def _split_keep(pattern: re.Pattern[str], text: str) -> list[str]:
    return [part.strip() for part in pattern.split(text) if part.strip()]


def _split_words(text: str, budget: int) -> list[str]:
    """Pack whitespace-separated words; cut a word that alone exceeds the budget by characters."""
    pieces: list[str] = []
    for word in text.split(" "):
        if nbytes(word) <= budget:
            pieces.append(word)
            continue
        current = ""
        for char in word:
            if current and nbytes(current + char) > budget:
                pieces.append(current)
                current = ""
            current += char
        if current:
            pieces.append(current)
    return pieces


def _joiner(piece: str) -> str:
    # Upstream's rule: a space after a piece that ends in a one-byte (Latin) character, none after CJK.
    return " " if nbytes(piece[-1]) == 1 else ""


def _join(left: str, right: str) -> str:
    return left + _joiner(left) + right if left else right


def _pack(units: list[str], budget: int) -> list[str]:
    """Greedily join consecutive units while the result fits the budget."""
    packed: list[str] = []
    current = ""
    for unit in units:
        candidate = _join(current, unit)
        if current and nbytes(candidate) > budget:
            packed.append(current)
            current = unit
        else:
            current = candidate
    if current:
        packed.append(current)
    return packed


def _split_sentence(sentence: str, budget: int) -> list[str]:
    """An over-long sentence as pieces <= budget: clauses, words inside an over-long clause."""
    pieces: list[str] = []
    for clause in _split_keep(_CLAUSE_END, sentence):
        if nbytes(clause) <= budget:
            pieces.append(clause)
        else:
            pieces.extend(_pack(_split_words(clause, budget), budget))
    # Short neighbouring clauses go back together; every cut still falls at a clause boundary,
    # or between words inside a clause that alone is over budget.
    return _pack(pieces, budget)


def chunk_text(text: str, budget: int, *, first_budget: int | None = None) -> list[str]:
    """Split normalised ``text`` into chunks of at most ``budget`` UTF-8 bytes.

    Sentence boundaries first; an over-long sentence is split at clause boundaries, an
    over-long clause between words.  Consecutive pieces are packed greedily up to the budget.
    With ``first_budget`` (a stream) the first chunk is short, so that the first audio comes
    sooner: see :func:`_first_chunk`.
    """
    if not text:
        return []
    if first_budget:
        first = _first_chunk(text, min(first_budget, budget))
        if text.startswith(first):  # always, for normalised text; otherwise chunk it whole
            return [first, *chunk_text(text[len(first) :].strip(), budget)]
    units: list[str] = []
    for sentence in _split_keep(_SENTENCE_END, text):
        units.extend([sentence] if nbytes(sentence) <= budget else _split_sentence(sentence, budget))
    return _pack(units, budget)


def _first_chunk(text: str, small: int) -> str:
    """A stream's first chunk: the leading clauses, up to the first clause or sentence end past
    :data:`_FIRST_CHUNK_MIN_BYTES`, within ``small`` bytes.  It runs on to a later boundary
    rather than leave a remainder shorter than that (a lone word makes a poor chunk), and a
    first clause longer than ``small`` is cut between words."""
    clauses = [clause for sentence in _split_keep(_SENTENCE_END, text) for clause in _split_keep(_CLAUSE_END, sentence)]
    if nbytes(clauses[0]) > small:
        return _pack(_split_words(clauses[0], small), small)[0]
    first = ""
    for clause in clauses:
        candidate = _join(first, clause)
        if first and nbytes(candidate) > small:
            break
        first = candidate
        if nbytes(first) >= _FIRST_CHUNK_MIN_BYTES and nbytes(text) - nbytes(first) > _FIRST_CHUNK_MIN_BYTES:
            break
    return first


def estimate_frames(ref_frames: int, ref_text: str, gen_text: str, speed: float) -> int:
    """Total mel frames (reference + generated) from the reference's frames-per-byte ratio."""
    gen_bytes = nbytes(gen_text)
    local_speed = _SHORT_TEXT_SPEED if gen_bytes < _SHORT_TEXT_BYTES else speed
    return ref_frames + int(ref_frames / max(nbytes(ref_text), 1) * gen_bytes / local_speed)


def chunk_durations(
    fix_duration: float | None, ref_frames: int, chunks: list[str], cross_fade_s: float
) -> list[float | None]:
    """Upstream's split of a total ``fix_duration`` over chunks (by byte weight), each still
    including the reference, so that N chunks do not make N times the requested length."""
    if fix_duration is None or len(chunks) <= 1:
        return [fix_duration] * len(chunks)
    ref_s = ref_frames * HOP_LENGTH / SAMPLE_RATE
    weights = [nbytes(chunk) for chunk in chunks]
    allocatable = fix_duration - ref_s + cross_fade_s * (len(chunks) - 1)
    return [ref_s + allocatable * w / sum(weights) for w in weights]


def fixed_frames(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE / HOP_LENGTH)


@dataclass(frozen=True)
class Piece:
    """Samples twice: float32 for the engine's users, and the same samples as 16-bit PCM
    (``audio_format.to_int16``'s rendering), made where the waveform was made, so that a WAV or
    PCM response needs no conversion on the host."""

    audio: np.ndarray  # float32
    pcm: np.ndarray  # int16, as long as audio

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, span: slice) -> Piece:
        return Piece(self.audio[span], self.pcm[span])

    @staticmethod
    def join(pieces: list[Piece]) -> Piece:
        if not pieces:
            return EMPTY
        return Piece(np.concatenate([p.audio for p in pieces]), np.concatenate([p.pcm for p in pieces]))

    @staticmethod
    def of(audio: np.ndarray) -> Piece:
        """Float samples with their PCM converted here, on the host."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        return Piece(audio, audio_format.to_int16(audio))

    def read_only(self) -> Piece:
        """Views that cannot be written through: what the fader keeps for ``finish`` is safe
        from whoever receives a piece, without a copy of the samples."""
        audio, pcm = self.audio.view(), self.pcm.view()
        audio.flags.writeable = False
        pcm.flags.writeable = False
        return Piece(audio, pcm)


EMPTY = Piece(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int16))


@dataclass
class CrossFader:
    """Joins chunk waveforms with a linear cross-fade and streams the settled samples.

    Each chunk's samples go to ``emit`` as soon as they can no longer change; only the last
    ``fade_samples`` of what came so far are held back, because the next chunk fades over them.
    The result equals upstream's whole-utterance cross-fade, and the concatenation of everything
    emitted equals ``finish()``'s return value exactly.  The PCM travels with the samples: only
    the mixed samples of a fade are converted here, the rest is each chunk's own.
    """

    fade_samples: int
    emit: Callable[[Piece], None] | None = None
    _held: Piece = EMPTY
    _out: list[Piece] = field(default_factory=list)
    _started: bool = False
    _only: Piece | None = None  # the first chunk, while it is the only one

    @property
    def started(self) -> bool:
        """Whether a chunk has come: its samples, less the tail held back, went to ``emit``."""
        return self._started

    def push(self, chunk: Piece) -> None:
        if not self._started:
            pending = chunk
            self._started = True
            self._only = chunk
        else:
            self._only = None
            n = min(self.fade_samples, len(self._held), len(chunk))
            if n > 0:
                fade_out = np.linspace(1.0, 0.0, n, dtype=np.float32)
                mixed = Piece.of(self._held.audio[-n:] * fade_out + chunk.audio[:n] * (np.float32(1.0) - fade_out))
                pending = Piece.join([self._held[: len(self._held) - n], mixed, chunk[n:]])
            else:
                pending = Piece.join([self._held, chunk])
        keep = min(self.fade_samples, len(pending))
        self._send(pending[: len(pending) - keep])
        self._held = pending[len(pending) - keep :]

    def finish(self) -> Piece:
        self._send(self._held)
        self._held = EMPTY
        if self._only is not None:
            # One chunk: what was sent is its samples, whole; spare a copy of the waveform.
            return self._only
        return Piece.join(self._out)

    def _send(self, piece: Piece) -> None:
        if len(piece) == 0:
            return
        piece = piece.read_only()
        self._out.append(piece)
        if self.emit is not None:
            self.emit(piece)
