"""Text normalisation, chunking, duration estimates and the streaming cross-fader."""

from __future__ import annotations

import numpy as np
import pytest

from ishowttsd import audio_format
from ishowttsd.engine import text as T


def test_normalize_whitespace_and_control_characters() -> None:
    assert T.normalize_text("  Hello,\t\tworld!\n\nNew\x00line\u200b here \r\n") == "Hello, world! New line here"
    assert T.normalize_text("\x07\x1b[31m") == "[31m"
    assert T.normalize_text(" \n\t ") == ""


def test_normalize_composes_but_keeps_fullwidth_punctuation() -> None:
    assert T.normalize_text("cafe\u0301") == "café"
    # NFKC would turn these into ASCII; the vocab and the chunker want them as they are.
    assert T.normalize_text("你好，世界。") == "你好，世界。"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Some call me nature, others call me mother nature.", "Some call me nature, others call me mother nature.  "),
        ("no full stop", "no full stop.  "),
        ("already. ", "already.  "),
        ("中文结尾。", "中文结尾。"),
    ],
)
def test_reference_text_matches_upstream_suffix(given: str, expected: str) -> None:
    assert T.reference_text(given) == expected


def test_chunk_budget_is_upstreams_formula() -> None:
    ref = T.reference_text("Some call me nature, others call me mother nature.")
    # upstream: int(len(ref_text.encode()) / ref_s * (22 - ref_s) * speed)
    assert T.chunk_budget(ref, 4.98, 1.0) == int(len(ref.encode()) / 4.98 * (22 - 4.98) * 1.0)
    assert T.chunk_budget(ref, 4.98, 0.5) < T.chunk_budget(ref, 4.98, 1.0)
    assert T.chunk_budget(ref, 30.0, 1.0) >= 24  # never degenerate


SENTENCES = (
    "The first sentence is short. The second one is a little longer than the first! "
    "Is the third a question? The fourth, which has clauses; several of them: ends here."
)


def test_chunks_respect_budget_and_keep_every_word() -> None:
    for budget in (30, 60, 100, 1000):
        chunks = T.chunk_text(SENTENCES, budget)
        assert all(len(c.encode()) <= budget for c in chunks), (budget, chunks)
        assert " ".join(chunks).split() == SENTENCES.split()


def test_chunks_split_at_sentences_first() -> None:
    chunks = T.chunk_text(SENTENCES, 90)
    assert chunks[0] == "The first sentence is short. The second one is a little longer than the first!"
    assert all(c[-1] in ".!?;:," for c in chunks)


def test_long_sentence_splits_at_clauses_then_words() -> None:
    sentence = "alpha beta gamma, delta epsilon zeta; eta theta iota kappa lambda mu nu xi omicron pi."
    chunks = T.chunk_text(sentence, 25)
    assert chunks[0] == "alpha beta gamma,"
    assert chunks[1] == "delta epsilon zeta;"
    assert all(len(c.encode()) <= 25 for c in chunks)
    assert " ".join(chunks) == sentence


def test_unbreakable_word_is_cut() -> None:
    chunks = T.chunk_text("x" * 70, 30)
    assert [len(c) for c in chunks] == [30, 30, 10]


def test_cjk_chunks_split_without_spaces() -> None:
    zh = "今天天气很好。我们去公园散步吧！你觉得怎么样？"
    chunks = T.chunk_text(zh, 30)
    assert chunks == ["今天天气很好。", "我们去公园散步吧！", "你觉得怎么样？"]
    assert "".join(chunks) == zh


def test_first_chunk_can_be_short_for_streaming() -> None:
    chunks = T.chunk_text(SENTENCES, 1000, first_budget=40)
    assert len(chunks) == 2
    assert chunks[0] == "The first sentence is short."
    assert " ".join(chunks) == SENTENCES


@pytest.mark.parametrize(
    ("text", "first"),
    [
        # ends at the first clause boundary past a few words (24 bytes)...
        (
            "Welcome back to the stream, everyone, thanks for the follows and the subs. Stay tuned.",
            "Welcome back to the stream,",
        ),
        # ...runs on past a very short first sentence...
        (
            "Hi chat! Welcome back to the stream, everyone, thanks for the follows.",
            "Hi chat! Welcome back to the stream,",
        ),
        # ...never leaves a lone word behind...
        ("Welcome back to the stream, everyone.", "Welcome back to the stream, everyone."),
        # ...and cuts a first clause over the budget between words.
        (
            "Thank you so much for the amazing raid and the hype train everybody, you are the best!",
            "Thank you so much for the amazing raid and the hype train",
        ),
    ],
)
def test_stream_first_chunk_ends_at_an_early_clause(text: str, first: str) -> None:
    chunks = T.chunk_text(text, 1000, first_budget=60)
    assert chunks[0] == first
    assert nbytes_ok(chunks[0], 60)
    assert " ".join(chunks) == text


def nbytes_ok(chunk: str, budget: int) -> bool:
    return 0 < T.nbytes(chunk) <= budget


def test_empty_text_has_no_chunks() -> None:
    assert T.chunk_text("", 100) == []


def test_estimate_frames_scales_with_text_and_speed() -> None:
    ref = "x" * 50
    base = T.estimate_frames(400, ref, "y" * 100, 1.0)
    assert base == 400 + int(400 / 50 * 100 / 1.0)
    assert T.estimate_frames(400, ref, "y" * 100, 2.0) < base
    # upstream slows very short texts down (local speed 0.3) so they are not swallowed
    assert T.estimate_frames(400, ref, "hi", 1.0) == 400 + int(400 / 50 * 2 / 0.3)


def test_chunk_durations_split_fix_duration_by_bytes() -> None:
    assert T.chunk_durations(None, 400, ["a", "b"], 0.15) == [None, None]
    assert T.chunk_durations(9.0, 400, ["only"], 0.15) == [9.0]
    ref_s = 400 * 256 / 24000
    parts = T.chunk_durations(20.0, 400, ["aaaa", "bbbbbbbbbbbb"], 0.15)
    gen = [p - ref_s for p in parts if p is not None]
    assert gen[1] == pytest.approx(3 * gen[0])
    # generated parts minus the cross-fade overlap add up to the requested total minus the reference
    assert sum(gen) - 0.15 == pytest.approx(20.0 - ref_s)


def _upstream_crossfade(waves: list[np.ndarray], n: int) -> np.ndarray:
    """infer_batch_process's joining loop, restated."""
    out = waves[0]
    for nxt in waves[1:]:
        k = min(n, len(out), len(nxt))
        if k <= 0:
            out = np.concatenate([out, nxt])
            continue
        mixed = out[-k:] * np.linspace(1, 0, k) + nxt[:k] * np.linspace(0, 1, k)
        out = np.concatenate([out[:-k], mixed, nxt[k:]])
    return out


@pytest.mark.parametrize("fade", [0, 1, 100, 3600])
def test_crossfader_streams_exactly_what_it_returns(fade: int) -> None:
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (5000, 50, 3000, 4000, 7)]
    pieces: list[T.Piece] = []
    fader = T.CrossFader(fade, pieces.append)
    for wave in waves:
        fader.push(T.Piece.of(wave))
    whole = fader.finish()
    assert whole.audio.dtype == np.float32 and whole.pcm.dtype == np.int16
    assert np.array_equal(np.concatenate([p.audio for p in pieces]), whole.audio)
    np.testing.assert_allclose(whole.audio, _upstream_crossfade(waves, fade), atol=1e-6)
    # The PCM is each chunk's own where nothing was mixed, and the mix's converted where it was:
    # the same as converting the joined waveform.
    assert np.array_equal(np.concatenate([p.pcm for p in pieces]), whole.pcm)
    np.testing.assert_array_equal(whole.pcm, audio_format.to_int16(whole.audio))


def test_crossfader_carries_the_chunks_own_pcm() -> None:
    """The PCM that comes with a chunk (the engine's, made on the device) is what goes out for
    its unmixed samples: none of it is converted again on the host."""
    wave = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    marked = T.Piece(wave, np.arange(1000, dtype=np.int16))  # not to_int16(wave): recognisable
    fader = T.CrossFader(100)
    fader.push(marked)
    fader.push(marked)
    pcm = fader.finish().pcm
    np.testing.assert_array_equal(pcm[:900], np.arange(900))
    np.testing.assert_array_equal(pcm[1000:], np.arange(100, 1000))
    fade_out = np.linspace(1.0, 0.0, 100, dtype=np.float32)
    mixed = wave[900:] * fade_out + wave[:100] * (np.float32(1.0) - fade_out)
    np.testing.assert_array_equal(pcm[900:1000], audio_format.to_int16(mixed))


def test_crossfader_holds_back_only_the_fade_tail() -> None:
    pieces: list[T.Piece] = []
    fader = T.CrossFader(100, pieces.append)
    fader.push(T.Piece.of(np.ones(1000, dtype=np.float32)))
    assert sum(len(p) for p in pieces) == 900
    fader.push(T.Piece.of(np.ones(1000, dtype=np.float32)))
    assert sum(len(p) for p in pieces) == 1800
    assert len(fader.finish()) == 1900


@pytest.mark.parametrize("emit", [False, True])
def test_crossfader_returns_a_lone_chunk_without_copying_it(emit: bool) -> None:
    """Most requests are one chunk: its samples are the result as they are (a copy of the whole
    waveform was on every request's path); what was streamed still adds up to them, and cannot
    be written through to the result."""
    chunk = T.Piece.of(np.random.default_rng(1).standard_normal(5000).astype(np.float32))
    pieces: list[T.Piece] = []
    fader = T.CrossFader(100, pieces.append if emit else None)
    fader.push(chunk)
    whole = fader.finish()
    assert np.shares_memory(whole.audio, chunk.audio) and np.shares_memory(whole.pcm, chunk.pcm)
    if emit:
        assert np.array_equal(np.concatenate([p.audio for p in pieces]), chunk.audio)
        with pytest.raises(ValueError, match="read-only"):
            pieces[0].audio[0] = 0.0
    fader = T.CrossFader(100)
    fader.push(chunk)
    fader.push(chunk[:300])
    assert not np.shares_memory(fader.finish().audio, chunk.audio)  # two chunks: the faded join is new
