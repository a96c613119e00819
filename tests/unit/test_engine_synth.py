"""Synthesis through the engine: output shape, determinism, streaming, cancellation, guards."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from ishowttsd import audio_format
from ishowttsd.engine.f5 import Cancelled, Engine, EngineError, _pcm16, _peak
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec
from ishowttsd.engine.text import Piece

LONG = (
    "The first sentence is here. The second sentence follows it closely. "
    "A third one, with a clause, arrives next. And the fourth sentence ends the paragraph. "
    "Then a second paragraph starts, because long input must span several chunks. It goes on "
    "for a while, with commas, semicolons; and more words than one chunk can hold. The end."
)


def _req(text: str = "Hello there, this is a test.", **kw: Any) -> SynthesisRequest:
    return SynthesisRequest(text=text, voice_id="default", **{"seed": 7, **kw})


def _tiny(**kw: Any) -> Engine:
    return Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu", **kw), vocoder="untrained")


def test_synthesis_result(tiny_engine: Any, default_voice: Any) -> None:
    out = tiny_engine.synthesize(default_voice, _req())
    assert out.sample_rate == tiny_engine.sample_rate == 24000
    assert out.audio.dtype == np.float32 and out.audio.ndim == 1
    np.testing.assert_array_equal(out.pcm, audio_format.to_int16(out.audio))  # made by the engine
    assert np.all(np.isfinite(out.audio)) and np.abs(out.audio).max() > 1e-3
    assert out.nfe == 7 and out.chunks == 1 and out.seed == 7 and not out.fp32_fallback
    assert set(out.timings) == {"text_prep", "ode", "vocoder", "total"}
    assert out.timings["total"] >= out.timings["ode"] + out.timings["vocoder"]
    # duration from the reference's seconds-per-byte: ~28 bytes at ~0.094 s/byte
    ref = default_voice.reference
    expected = ref.seconds / len(ref.text.encode()) * len(b"Hello there, this is a test.")
    assert abs(out.duration_s - expected) < 0.1


def test_same_seed_same_audio_and_other_seed_differs(tiny_engine: Any, default_voice: Any) -> None:
    a = tiny_engine.synthesize(default_voice, _req(seed=3)).audio
    b = tiny_engine.synthesize(default_voice, _req(seed=3)).audio
    c = tiny_engine.synthesize(default_voice, _req(seed=4)).audio
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unseeded_request_reports_its_seed(tiny_engine: Any, default_voice: Any) -> None:
    out = tiny_engine.synthesize(default_voice, SynthesisRequest(text="Again.", voice_id="default"))
    again = tiny_engine.synthesize(default_voice, _req("Again.", seed=out.seed))
    assert np.array_equal(out.audio, again.audio)


def test_speed_and_fix_duration(tiny_engine: Any, default_voice: Any) -> None:
    normal = tiny_engine.synthesize(default_voice, _req(LONG))
    fast = tiny_engine.synthesize(default_voice, _req(LONG, speed=2.0))
    assert fast.duration_s < 0.65 * normal.duration_s
    ref_s = default_voice.reference.seconds
    fixed = tiny_engine.synthesize(default_voice, _req("Exactly this long.", fix_duration=ref_s + 3.0))
    assert abs(fixed.duration_s - 3.0) < 0.05


def test_other_target_rms_reuses_the_decoded_reference(tiny_engine: Any, default_voice: Any) -> None:
    before = tiny_engine.decode_count
    out = tiny_engine.synthesize(default_voice, _req(target_rms=0.2))
    assert tiny_engine.decode_count == before
    assert np.all(np.isfinite(out.audio))


def test_streaming_chunks_concatenate_to_the_audio(tiny_engine: Any, default_voice: Any) -> None:
    events: list[str] = []
    pieces: list[Piece] = []

    def on_chunk(piece: Piece) -> None:
        events.append("audio")
        pieces.append(piece)

    def should_stop() -> bool:
        events.append("chunk")
        return False

    out = tiny_engine.synthesize(
        default_voice, _req(LONG), on_chunk=on_chunk, should_stop=should_stop, first_chunk_bytes=40
    )
    assert out.chunks >= 3
    assert events.count("chunk") == out.chunks
    # audio from chunk 1 is out before chunk 2 starts
    assert events[:3] == ["chunk", "audio", "chunk"]
    assert all(p.audio.dtype == np.float32 and p.pcm.dtype == np.int16 for p in pieces)
    assert np.array_equal(np.concatenate([p.audio for p in pieces]), out.audio)
    assert np.array_equal(np.concatenate([p.pcm for p in pieces]), out.pcm)
    np.testing.assert_array_equal(out.pcm, audio_format.to_int16(out.audio))
    # the same request without a callback gives the same audio
    assert np.array_equal(tiny_engine.synthesize(default_voice, _req(LONG), first_chunk_bytes=40).audio, out.audio)


def test_cancel_between_chunks(tiny_engine: Any, default_voice: Any) -> None:
    pieces: list[np.ndarray] = []
    polls = iter([False, True])
    with pytest.raises(Cancelled):
        tiny_engine.synthesize(
            default_voice, _req(LONG), on_chunk=pieces.append, should_stop=lambda: next(polls), first_chunk_bytes=40
        )
    assert len(pieces) == 1
    with pytest.raises(Cancelled):
        tiny_engine.synthesize(default_voice, _req(), should_stop=lambda: True)


@pytest.mark.parametrize("text", ["", "  \n\t ", "\x00\x01"])
def test_empty_text_is_rejected(tiny_engine: Any, default_voice: Any, text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        tiny_engine.synthesize(default_voice, _req(text))


def test_out_of_range_nfe_is_rejected(tiny_engine: Any, default_voice: Any) -> None:
    with pytest.raises(ValueError, match="nfe"):
        tiny_engine.synthesize(default_voice, _req(nfe=0))


def test_warm_up_passes_on_a_working_model(tiny_engine: Any, default_voice: Any) -> None:
    tiny_engine.warm_up(default_voice, [7, 7, 16])


@pytest.mark.parametrize("broken", [0.0, float("nan")])
def test_warm_up_detects_silent_or_nan_output(broken: float) -> None:
    engine = _tiny()
    voice = engine.prepare_voice(VoiceSpec(id="default"))

    # A vocoder that returns all zeros (or NaN), as a broken GPU kernel would.
    def dead(mel: torch.Tensor) -> torch.Tensor:
        return torch.full((mel.shape[0], mel.shape[-1] * 256), broken)

    engine.vocoder.forward = dead  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="silent" if broken == 0.0 else "non-finite"):
        engine.warm_up(voice, [7])


def test_vocoder_warm_up_covers_every_length_step_a_request_can_reach(tiny_engine: Any, default_voice: Any) -> None:
    """On the GPU a length the vocoder had not run at cost 17-31 ms more the first time (cuFFT
    plans, cuBLAS set-up): CUDA warm-up runs it at every 64-frame step up to the longest chunk,
    the inverse FFT's planned lengths, so no request is a first.  Checked here by what it decodes."""
    from ishowttsd.engine.vocoder import FFT_FRAMES

    real = tiny_engine.vocoder.forward
    lengths: list[int] = []

    def spy(mel: torch.Tensor) -> torch.Tensor:
        lengths.append(mel.shape[-1])
        return real(mel)

    tiny_engine.vocoder.forward = spy
    try:
        tiny_engine._warm_vocoder(default_voice.reference)
        warmed = list(lengths)
        lengths.clear()
        tiny_engine.synthesize(default_voice, _req(LONG * 3))
    finally:
        tiny_engine.vocoder.forward = real
    assert warmed == list(range(FFT_FRAMES, warmed[-1] + 1, FFT_FRAMES))
    assert len(lengths) >= 2, "the request must take several chunks"
    assert max(lengths) <= warmed[-1], (lengths, warmed[-1])


def test_half_precision_guard_falls_back_to_fp32(caplog: pytest.LogCaptureFixture) -> None:
    engine = _tiny(precision="bf16")
    assert engine.info.precision == "bf16"
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    healthy = engine.synthesize(voice, _req())
    assert not healthy.fp32_fallback and np.all(np.isfinite(healthy.audio))

    engine._fp32_model()  # the fp32 copy is made from the healthy weights...
    # ...then the half-precision model starts producing NaN, as fp16 overflow does on some GPUs.
    engine.dit.proj_out.register_forward_hook(lambda _m, _i, out: torch.full_like(out, float("nan")))
    secret = "Do not log this sentence."
    with caplog.at_level(logging.WARNING, logger="ishowttsd.engine"):
        out = engine.synthesize(voice, _req(secret))
    assert out.fp32_fallback
    assert np.all(np.isfinite(out.audio)) and np.abs(out.audio).max() > 1e-3
    assert any("fp32" in r.getMessage() for r in caplog.records)
    assert all(secret not in r.getMessage() and secret not in str(r.__dict__) for r in caplog.records)

    engine.warm_up(voice, [7])  # half precision is broken here: the engine switches to fp32 for good
    assert engine.precision == "fp32" and engine.info.precision == "fp32"
    assert engine.vocoder.dtype == torch.float32
    assert not engine.synthesize(voice, _req()).fp32_fallback


def test_half_precision_engine_decodes_with_a_half_vocoder_and_redoes_in_fp32() -> None:
    """The vocoder's network runs in the engine's precision (the inverse STFT in fp32): its
    audio is within half-precision rounding of the fp32 vocoder's, not equal to it.  The
    guard's fp32 redo decodes with the fp32 vocoder."""
    engine = _tiny(precision="bf16")
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    assert engine.vocoder.dtype == torch.bfloat16 and engine._fp32_vocoder.dtype == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in engine.vocoder.backbone.parameters())
    seen: dict[str, list[torch.Tensor]] = {"half": [], "fp32": []}

    def spy(name: str, vocoder: Any) -> None:
        real = vocoder.forward

        def forward(mel: torch.Tensor) -> torch.Tensor:
            seen[name].append(mel)
            wave: torch.Tensor = real(mel)
            assert wave.dtype == torch.float32
            return wave

        vocoder.forward = forward

    spy("half", engine.vocoder)
    spy("fp32", engine._fp32_vocoder)
    out = engine.synthesize(voice, _req())
    assert len(seen["half"]) == 1 and not seen["fp32"]
    mel = seen["half"][0]
    with torch.inference_mode():
        half, full = engine.vocoder(mel)[0], engine._fp32_vocoder(mel)[0]
    assert np.array_equal(half.numpy()[: len(out.audio)], out.audio)
    distance = float((half - full).norm() / full.norm())
    assert 1e-5 < distance < 3e-2, distance

    engine._fp32_model()
    engine.dit.proj_out.register_forward_hook(lambda _m, _i, out: torch.full_like(out, float("nan")))
    seen["half"].clear()
    seen["fp32"].clear()
    assert engine.synthesize(voice, _req()).fp32_fallback
    assert len(seen["half"]) == 1 and len(seen["fp32"]) == 1  # the NaN chunk, then its fp32 redo


def test_warm_up_captures_and_runs_each_guidance_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One warm synthesis per (NFE, guidance), and the fast path precaptures both guidance
    modes' buckets (on the CPU it captures nothing, so the calls are recorded)."""
    from ishowttsd.engine import accel

    engine = _tiny()
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    engine.fast = accel.FastSolver(engine.dit, engine.device, compile=False, graphs=False)
    asked: list[bool] = []
    real = engine.fast.precapture

    def spy(frames: Any, guided: bool = True, rows: int = 1) -> int:
        asked.append(guided)
        return real(frames, guided=guided, rows=rows)

    monkeypatch.setattr(engine.fast, "precapture", spy)
    caplog.set_level("INFO", logger="ishowttsd.engine")
    engine.warm_up(voice, [7, 6], [2.0, 0.0, 1.5])
    assert sorted(asked) == [False, True]
    done = sorted((r.nfe, r.cfg_strength) for r in caplog.records if r.message == "warm-up done")  # type: ignore[attr-defined]
    assert done == [(6, 0.0), (6, 2.0), (7, 0.0), (7, 2.0)]


def _drive(steps: Any, trace: list[str]) -> Any:
    """Run a synthesis generator to its end, noting each yield in ``trace``."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        trace.append("yield")


@pytest.fixture()
def overlapping() -> tuple[Any, Any]:
    """A tiny engine as it runs on CUDA: the next chunk queued before the last one is waited for
    (on the CPU the work is synchronous, so this checks the order and the results, not speed)."""
    engine = _tiny()
    engine.overlap = True
    return engine, engine.prepare_voice(VoiceSpec(id="default"))


def test_overlapped_steps_queue_the_next_chunk_first_and_give_the_same_audio(overlapping: Any) -> None:
    engine, voice = overlapping
    text = LONG + " " + LONG
    engine.overlap = False
    plain_chunks: list[Piece] = []
    plain = engine.synthesize(voice, _req(text), on_chunk=plain_chunks.append)
    n = plain.chunks
    assert n >= 3
    trace: list[str] = []
    launch, collect = engine._launch, engine._collect
    engine._launch = lambda *a: trace.append("launch") or launch(*a)
    engine._collect = lambda *a: trace.append("collect") or collect(*a)
    # Without overlap (the CPU's default) the generator never yields and never queues ahead.
    _drive(engine.synthesis_steps(voice, _req(text)), trace)
    assert trace == ["launch", "collect"] * n
    trace.clear()
    engine.overlap = True
    whole = _drive(engine.synthesis_steps(voice, _req(text)), trace)
    assert np.array_equal(whole.audio, plain.audio)
    # Nobody listening: two chunks queued before the first wait; then each wait is followed by
    # the next launch.
    assert trace == ["launch", "launch"] + ["yield", "collect", "launch"] * (n - 2) + ["yield", "collect"] * 2
    trace.clear()
    chunks: list[Piece] = []
    got = _drive(engine.synthesis_steps(voice, _req(text), on_chunk=chunks.append), trace)
    assert np.array_equal(got.audio, plain.audio)
    assert len(chunks) == len(plain_chunks)
    for a, b in zip(chunks, plain_chunks, strict=True):
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.pcm, b.pcm)
    # A listener: the first chunk is collected (and handed over) before the second is queued;
    # from then on the same order as above.
    assert trace == (["launch", "yield", "collect", "launch"] + ["launch", "yield", "collect"] * (n - 2)
                     + ["yield", "collect"])


def test_two_overlapped_requests_interleaved_each_give_their_own_audio(overlapping: Any) -> None:
    """The worker advances two requests' generators in turn: each must get what it gets alone."""
    engine, voice = overlapping
    first, second = _req(LONG, seed=1), _req("A short second request, in between.", seed=2)
    alone = [engine.synthesize(voice, r).audio for r in (first, second)]
    steps = [engine.synthesis_steps(voice, r) for r in (first, second)]
    results: dict[int, Any] = {}
    while len(results) < 2:
        for i, s in enumerate(steps):
            if i in results:
                continue
            try:
                next(s)
            except StopIteration as done:
                results[i] = done.value
    assert np.array_equal(results[0].audio, alone[0]) and np.array_equal(results[1].audio, alone[1])


def test_a_listener_interleaved_with_another_request_gets_its_own_audio(overlapping: Any) -> None:
    """A listener's request (its first chunk waited for before its second is queued) taking turns
    with a whole-text one: each gets what it gets alone, and the listener's pieces add up to it."""
    engine, voice = overlapping
    listener, other = _req(LONG, seed=1), _req(LONG, seed=2)
    alone = engine.synthesize(voice, listener, first_chunk_bytes=60).audio
    other_alone = engine.synthesize(voice, other).audio
    pieces: list[Piece] = []
    steps = [
        engine.synthesis_steps(voice, listener, on_chunk=pieces.append, first_chunk_bytes=60),
        engine.synthesis_steps(voice, other),
    ]
    results: dict[int, Any] = {}
    while len(results) < 2:
        for i, s in enumerate(steps):
            if i not in results:
                try:
                    next(s)
                except StopIteration as done:
                    results[i] = done.value
    assert results[0].chunks >= 3
    assert np.array_equal(results[0].audio, alone) and np.array_equal(results[1].audio, other_alone)
    assert np.array_equal(np.concatenate([p.audio for p in pieces]), alone)


def test_overlapped_guard_redoes_each_bad_chunk_in_fp32() -> None:
    engine = _tiny(precision="bf16")
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    engine.overlap = True
    engine._fp32_model()
    engine.dit.proj_out.register_forward_hook(lambda _m, _i, out: torch.full_like(out, float("nan")))
    out = _drive(engine.synthesis_steps(voice, _req(LONG + " " + LONG)), [])
    assert out.fp32_fallback and out.chunks >= 3
    assert np.all(np.isfinite(out.audio)) and np.abs(out.audio).max() > 1e-3


@pytest.mark.parametrize(
    ("samples", "bad"),
    [
        ([0.1, -0.5, 0.2], False),
        ([0.1, float("nan"), 0.2], True),
        ([float("nan")] * 3, True),
        ([0.1, float("-inf")], True),
        ([0.0, 0.0, 0.0], True),
        ([0.0, -5e-5, 0.0], True),
        ([], True),
    ],
)
def test_guard_judges_samples_on_the_host_and_on_the_device_alike(samples: list[float], bad: bool) -> None:
    """The guard reads one reduction (``f5._peak``, which :meth:`Engine._launch` computes beside
    the samples) or, on the host, max and min: both must call the same output bad."""
    x = np.asarray(samples, dtype=np.float32)
    assert Engine._bad(x) is bad
    peak = float(_peak(torch.from_numpy(x)))
    assert Engine._bad_peak(len(x), peak) is bad


def test_device_pcm_is_the_hosts_bit_for_bit() -> None:
    """``f5._pcm16`` (the 16-bit samples made beside the waveform) and ``audio_format.to_int16``
    (the host's, the reference) must agree on every sample: clipping, the infinities, NaN, and
    rounding half to even at the exact halves."""
    rng = np.random.default_rng(3)
    halves = (np.arange(-8, 9, dtype=np.float32) + np.float32(0.5)) / np.float32(32767.0)
    x = np.concatenate([
        (rng.standard_normal(100_000) * 0.5).astype(np.float32),
        halves,
        np.array([0.0, -0.0, 1.0, -1.0, 1.00002, -1.00002, 7.0, np.nan, np.inf, -np.inf, 1e-30], dtype=np.float32),
    ])
    want = audio_format.to_int16(x)
    got = _pcm16(torch.from_numpy(x)).numpy()
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, want)
