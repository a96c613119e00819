"""On the GPU (issue 3): the full-size untrained F5TTS_v1_Base synthesises on CUDA, and its RTF
is reported; the CUDA-graph path gives the eager path's audio (issue 8).

Run on the device machine: ``pytest -m gpu tests/gpu -s``.  Results go to stdout and, when
``ISHOWTTSD_GPU_REPORT`` names a file, to that JSON file (bench/README.md records them).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

TEXT = (
    "Welcome back to the stream everyone, thanks for the follows and the subs today. "
    "We are going to try something fun, so stay tuned and tell your friends."
)
_REPORT: dict[str, Any] = {}


def _report(key: str, value: Any) -> None:
    _REPORT[key] = value
    print(f"\nGPU {key}: {json.dumps(value, default=str)}")
    path = os.environ.get("ISHOWTTSD_GPU_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_REPORT, f, indent=1, default=str)


@pytest.fixture(scope="module")
def torch_cuda() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch


def _load(graphs: bool, compile: bool = False) -> Any:
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec

    return Engine.load(
        ModelSpec(
            architecture="F5TTS_v1_Base", weights="untrained", device="cuda", cuda_graphs=graphs, compile=compile
        ),
        vocoder="untrained",
    )


def _rtf(engine: Any, voice: Any, nfe: int, repeats: int = 10) -> dict[str, Any]:
    from ishowttsd.engine.spec import SynthesisRequest

    req = SynthesisRequest(text=TEXT, voice_id="default", nfe=nfe, seed=1234)
    out = None
    for _ in range(2):
        out = engine.synthesize(voice, req)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = engine.synthesize(voice, req)  # returns host audio: synchronised
        times.append(time.perf_counter() - t0)
    assert out is not None
    median = statistics.median(times)
    return {
        "median_ms": median * 1e3,
        "min_ms": min(times) * 1e3,
        "audio_s": out.duration_s,
        "rtf": median / out.duration_s,
        "audio": out.audio,
    }


def test_full_size_untrained_model_synthesises_on_cuda(torch_cuda: Any) -> None:
    from ishowttsd.engine.spec import VoiceSpec

    engine = _load(graphs=False)
    assert engine.info.device.startswith("cuda") and engine.info.untrained
    assert engine.info.parameters > 300e6  # the full-size DiT, not the tiny one
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    engine.warm_up(voice, [7])
    r = _rtf(engine, voice, 7)
    audio = r.pop("audio")
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-4
    assert 5.0 < r["audio_s"] < 20.0
    assert r["rtf"] < 0.25  # the self-check's default ceiling, by a wide margin on an H100
    _report(
        "eager_nfe7",
        {
            **r,
            "gpu": torch_cuda.cuda.get_device_name(),
            "torch": torch_cuda.__version__,
            "cuda": torch_cuda.version.cuda,
            "precision": engine.precision,
            "parameters": engine.info.parameters,
        },
    )


def test_cuda_graphs_match_eager(torch_cuda: Any) -> None:
    from ishowttsd.engine.spec import VoiceSpec
    from ishowttsd.quality import log_mel_distance

    eager = _load(graphs=False)
    ve = eager.prepare_voice(VoiceSpec(id="default"))
    want = _rtf(eager, ve, 7, repeats=3)
    del eager
    graphs = _load(graphs=True)
    assert graphs.info.cuda_graphs and graphs.fast is not None
    vg = graphs.prepare_voice(VoiceSpec(id="default"))
    graphs.warm_up(vg, [7])
    assert graphs.fast.graph_count > 0
    got = _rtf(graphs, vg, 7)
    assert len(got["audio"]) == len(want["audio"])
    dist = log_mel_distance(got["audio"], want["audio"], 24000)
    _report(
        "graphs_nfe7",
        {k: v for k, v in got.items() if k != "audio"}
        | {"distance_db_vs_eager_fp16": dist, "graphs": graphs.fast.graph_count},
    )
    assert dist < 0.5, dist  # fp16 rounding only (bucketed + masked attention, same math)


def test_compiled_fast_path_matches_eager(torch_cuda: Any) -> None:
    """torch.compile (four regions, dynamic length) + graphs gives eager's audio, and a batch of
    two requests of one bucket gives each request's solo result."""
    from ishowttsd.engine import accel, sampler
    from ishowttsd.engine.spec import VoiceSpec
    from ishowttsd.quality import log_mel_distance

    eager = _load(graphs=False)
    want = _rtf(eager, eager.prepare_voice(VoiceSpec(id="default")), 7, repeats=2)
    del eager
    fast = _load(graphs=True, compile=True)
    assert fast.fast is not None and fast.fast.compiled
    assert fast.fast.pdl == (torch_cuda.cuda.get_device_capability() >= (9, 0))  # Hopper on
    voice = fast.prepare_voice(VoiceSpec(id="default"))
    fast.warm_up(voice, [7])
    got = _rtf(fast, voice, 7)
    dist = log_mel_distance(got["audio"], want["audio"], 24000)
    _report("compile_graphs_nfe7", {k: v for k, v in got.items() if k != "audio"} | {"distance_db_vs_eager": dist})
    assert dist < 0.5, dist
    torch = torch_cuda
    ref_mel = fast._reference_mel(voice.reference, 0.1)
    items = []
    for words, extra in (("A first request, rather longer than the other one.", 600), ("Second.", 620)):
        ids = fast._tokens(voice.reference.text, words)
        frames = sampler.total_frames(voice.reference.frames + extra, ref_mel.shape[1], ids.shape[1])
        noise = torch.randn(1, frames, 100, device="cuda", generator=torch.Generator("cuda").manual_seed(extra))
        items.append(accel.BatchItem(ref_mel, ids, frames, noise))
    with torch.inference_mode():
        pair = fast.fast.sample_batch(items, nfe=7, cfg_strength=2.0, sway=-1.0)
        alone = [fast.fast.sample_batch([item], nfe=7, cfg_strength=2.0, sway=-1.0)[0] for item in items]
    for a, b in zip(pair, alone, strict=True):
        assert float((a - b).norm() / b.norm()) < 5e-3
    _check_overlapped_requests(fast, voice)


def _check_overlapped_requests(engine: Any, voice: Any) -> None:
    """Requests advanced in turn (as the worker runs them: each queued on the GPU before the
    last is waited for) share the bucket graphs' buffers in stream order: each must still get
    its own audio, that of running it alone.  Two of one length (one bucket), one longer."""
    from ishowttsd.engine.spec import SynthesisRequest

    assert engine.overlap
    reqs = [
        SynthesisRequest(text=TEXT, voice_id="default", nfe=7, seed=1),
        SynthesisRequest(text=TEXT, voice_id="default", nfe=7, seed=2),
        SynthesisRequest(text=TEXT + " " + TEXT, voice_id="default", nfe=7, seed=3),
    ]
    alone = [engine.synthesize(voice, r).audio for r in reqs]
    steps = [engine.synthesis_steps(voice, r) for r in reqs]
    got: dict[int, Any] = {}
    while len(got) < len(steps):
        for i, s in enumerate(steps):
            if i not in got:
                try:
                    next(s)
                except StopIteration as done:
                    got[i] = done.value.audio
    worst = max(float(np.abs(got[i] - a).max() / np.abs(a).max()) for i, a in enumerate(alone))
    _report("overlapped_requests", {"worst_relative_difference": worst, "exact": worst == 0.0})
    assert worst < 1e-3, worst


def test_grouped_conv_kernel_matches_cudnn(torch_cuda: Any) -> None:
    """The Triton position-embedding conv (engine/kernels.py) against cuDNN in fp32."""
    from ishowttsd.engine import kernels

    torch = torch_cuda
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1024, 1024, 31, groups=16, padding=15).cuda()
    for n in (1, 97, 1472):
        x = torch.randn(2, n, 1024, device="cuda")
        want = conv(x.transpose(1, 2)).transpose(1, 2)
        w, b = kernels.conv_weight(conv.half())
        got = kernels.grouped_conv1d(x.half(), w, b).float()
        conv.float()
        err = float((got - want).abs().max() / want.abs().max())
        assert err < 2e-3, (n, err)


def test_masked_attention_ignores_padded_keys(torch_cuda: Any) -> None:
    """The fast path's attention (fp16, CUDA kernels) equals fp32 SDPA over the real keys only."""
    from ishowttsd.engine import accel

    torch = torch_cuda
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1472, 16, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    for real in (1472, 1457, 1409):
        key_mask = accel._key_mask(torch.arange(1472, device="cuda")[None, :] < real, 2)
        got = accel.masked_attention(q, k, v, key_mask).float()
        want = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2).float(), k[:, :real].transpose(1, 2).float(), v[:, :real].transpose(1, 2).float()
        ).transpose(1, 2)
        err = float((got - want).abs().max())
        assert err < 2e-3, (real, err)
        # and the padded keys really are ignored: changing them changes nothing
        k2, v2 = k.clone(), v.clone()
        k2[:, real:] = 7.0
        v2[:, real:] = -7.0
        assert torch.equal(accel.masked_attention(q, k2, v2, key_mask), accel.masked_attention(q, k, v, key_mask))


def test_rotate_qkv_kernel_matches_torch(torch_cuda: Any) -> None:
    """The Triton q/k/v split + rotation (engine/kernels.py) equals its PyTorch fallback."""
    from ishowttsd.engine import kernels

    torch = torch_cuda
    torch.manual_seed(0)
    for g, n in ((2, 1472), (1, 97)):
        qkv = torch.randn(g, n, 3 * 16 * 64, device="cuda", dtype=torch.float16)
        angles = torch.randn(n, 32, device="cuda")
        angles = torch.cat((angles, angles), dim=-1)[None, :, None, :]
        cos, sin = angles.cos(), angles.sin()
        bias = torch.where(torch.arange(n, device="cuda") < n - 15, 0.0, kernels.KEY_PAD_BIAS).half().expand(g, n)
        for key_bias in (None, bias):
            got = kernels.rotate_qkv(qkv, cos, sin, 16, key_bias)
            cpu_bias = None if key_bias is None else key_bias.cpu()
            want = kernels.rotate_qkv(qkv.cpu(), cos.cpu(), sin.cpu(), 16, cpu_bias)
            for a, b in zip(got, want, strict=True):
                assert a.shape == b.shape and a.stride() == b.stride()
                assert float((a.float().cpu() - b.float()).abs().max()) < 2e-3
        # q and k only, as one (G, N, 2, H, d), for FlashAttention: the same q and k
        pair = kernels.rotate_qk(qkv, cos, sin, 16)
        assert pair.shape == (g, n, 2, 16, 64)
        q, k, _v = kernels.rotate_qkv(qkv, cos, sin, 16)
        assert torch.equal(pair[:, :, 0], q) and torch.equal(pair[:, :, 1], k)


def test_column_attention_ignores_padded_keys(torch_cuda: Any) -> None:
    """cuDNN over q/k with the validity column (fp16) equals fp32 SDPA over the real keys only."""
    from ishowttsd.engine import accel, kernels

    torch = torch_cuda
    assert accel.column_attention_works(torch.device("cuda"), torch.float16)
    torch.manual_seed(0)
    g, n, heads, d = 2, 1472, 16, 64
    qkv = torch.randn(g, n, 3 * heads * d, device="cuda", dtype=torch.float16)
    angles = torch.randn(n, d // 2, device="cuda")
    angles = torch.cat((angles, angles), dim=-1)[None, :, None, :]
    cos, sin = angles.cos(), angles.sin()
    for real in (1472, 1457, 1409):
        bias = accel.key_bias(torch.arange(n, device="cuda")[None, :] < real, g, torch.float16)
        q, k, v = kernels.rotate_qkv(qkv, cos, sin, heads, bias)
        got = accel.column_attention(q, k, v).float()
        want = torch.nn.functional.scaled_dot_product_attention(
            q[..., :d].transpose(1, 2).float(),
            k[:, :real, :, :d].transpose(1, 2).float(),
            v[:, :real].transpose(1, 2).float(),
        ).transpose(1, 2)
        err = float((got - want).abs().max())
        assert err < 2e-3, (real, err)
        noisy = qkv.clone()
        noisy[:, real:] = 7.0
        q2, k2, v2 = kernels.rotate_qkv(noisy, cos, sin, heads, bias)
        assert torch.equal(accel.column_attention(q2, k2, v2)[:, :real], accel.column_attention(q, k, v)[:, :real])


def test_flash_attention_ignores_padded_keys(torch_cuda: Any) -> None:
    """FlashAttention with each row's key count (fp16) equals fp32 SDPA over that row's real
    keys, whatever the padded keys hold, and replays inside a CUDA graph.  Runs where the
    optional flash-attn-4 package is installed."""
    pytest.importorskip("flash_attn.cute")
    from ishowttsd.engine import flash

    torch = torch_cuda
    assert flash.flash_attention_works(torch.device("cuda"), torch.float16)
    torch.manual_seed(0)
    g, n, heads, d = 2, 1472, 16, 64
    q, k, v = (torch.randn(g, n, heads, d, device="cuda", dtype=torch.float16) for _ in range(3))
    reals = (1457, 1409)
    keys = torch.tensor(reals, device="cuda", dtype=torch.int32)
    got = flash.flash_attention(q, k, v, keys)
    for row, real in enumerate(reals):
        want = torch.nn.functional.scaled_dot_product_attention(
            q[row : row + 1].transpose(1, 2).float(),
            k[row : row + 1, :real].transpose(1, 2).float(),
            v[row : row + 1, :real].transpose(1, 2).float(),
        ).transpose(1, 2)
        err = float((got[row : row + 1].float() - want).abs().max())
        assert err < 2e-3, (real, err)
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        flash.flash_attention(q, k, v, keys)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        out = flash.flash_attention(q, k, v, keys)
    for row, real in enumerate(reals):
        # Padded frames hold finite activations in the engine; whatever they are must not count.
        k[row, real:] = 7.0
        v[row, real:] = -300.0
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, got)


def test_gelu_epilogue_matches_upstream_feed_forward(torch_cuda: Any) -> None:
    """cuBLASLt's bias + GELU epilogue (fp16) equals upstream's feed-forward in fp32."""
    from f5_tts.model.modules import FeedForward

    from ishowttsd.engine import accel

    torch = torch_cuda
    torch.manual_seed(0)
    # The epilogue is the tanh GELU (upstream's), not the erf one: checked in fp32.
    # Inputs scaled so the pre-activations sit where the two forms differ (|x| of 0.5 to 3).
    gelu = torch.nn.functional.gelu
    bias = torch.randn(2048, device="cuda") * 0.5
    x32, w = torch.randn(512, 1024, device="cuda") / 32, torch.randn(2048, 1024, device="cuda")
    pre = torch.addmm(bias, x32, w.t())
    fused = torch._addmm_activation(bias, x32, w.t(), use_gelu=True)
    tanh_err = float((fused - gelu(pre, approximate="tanh")).abs().max())
    erf_err = float((fused - gelu(pre)).abs().max())
    assert tanh_err < erf_err / 10, (tanh_err, erf_err)
    ff = FeedForward(dim=1024, mult=2, approximate="tanh").eval().cuda()
    x = torch.randn(2, 1472, 1024, device="cuda")
    with torch.no_grad():
        want = ff(x)
        got = accel._feed_forward(ff.half(), x.half(), True).float()
        plain = ff(x.half()).float()
    err, err_plain = float((got - want).abs().max()), float((plain - want).abs().max())
    assert err < 2 * err_plain + 1e-3, (err, err_plain)


def test_device_pcm_equals_the_hosts(torch_cuda: Any) -> None:
    """The 16-bit samples that WAV and PCM responses carry are made on the GPU (``f5._pcm16``):
    they must be ``audio_format.to_int16``'s, bit for bit, clipping, NaN and halves included."""
    from ishowttsd import audio_format
    from ishowttsd.engine.f5 import _pcm16

    torch = torch_cuda
    x = torch.randn(1_000_000, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 0.7
    specials = [float("nan"), float("inf"), -float("inf"), 2.0, -1.5, 0.5 / 32767, 1.5 / 32767, -2.5 / 32767]
    x[: len(specials)] = torch.tensor(specials, device="cuda")
    np.testing.assert_array_equal(_pcm16(x).cpu().numpy(), audio_format.to_int16(x.cpu().numpy()))


def test_half_vocoder_is_within_fp16_rounding_of_fp32(torch_cuda: Any) -> None:
    """The fp16 engine decodes with the vocoder's network in fp16 (ISTFT fp32): on the H100 its
    waveform was 60 dB above the difference from fp32 (bench/NOTES.md item 34)."""
    from ishowttsd.engine import sampler
    from ishowttsd.engine.spec import VoiceSpec

    torch = torch_cuda
    engine = _load(graphs=False)
    assert engine.precision == "fp16" and engine.vocoder.dtype == torch.float16
    voice = engine.prepare_voice(VoiceSpec(id="default"))
    mel = engine._reference_mel(voice.reference, 0.1).permute(0, 2, 1)  # real speech
    with torch.inference_mode(), sampler.exact_length_convs(engine.device):
        half, full = engine.vocoder(mel), engine._fp32_vocoder(mel)
    assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
    snr_db = -20 * float(torch.log10((half - full).norm() / full.norm()))
    _report("half_vocoder", {"snr_db_vs_fp32": snr_db, "frames": mel.shape[-1]})
    assert 40.0 < snr_db < 120.0, snr_db


def test_compiled_vocoder_matches_eager_at_every_length_without_recompiling(torch_cuda: Any) -> None:
    """The compiled engine decodes with the vocoder's network compiled, its length dynamic: at
    lengths from a short first chunk to a long one, no recompile after the first, and the same
    audio as the eager half-precision vocoder within fp16 rounding (fused kernels round
    differently)."""
    from ishowttsd.engine import sampler
    from ishowttsd.engine.vocoder import Vocoder

    torch = torch_cuda
    engine = _load(graphs=True, compile=True)
    assert engine.fast is not None and engine.fast.compiled
    assert isinstance(engine.vocoder, Vocoder) and engine.vocoder._mark_dynamic
    eager = engine._fp32_vocoder.at_precision(torch.float16)
    worst = 0.0
    for i, frames in enumerate((289, 64, 131, 700, 1030, 1500)):
        mel = torch.randn(1, 100, frames, device="cuda", generator=torch.Generator("cuda").manual_seed(frames))
        with torch._dynamo.config.patch(error_on_recompile=i > 0), torch.inference_mode(), \
                sampler.exact_length_convs(engine.device):
            got, want = engine.vocoder(mel), eager(mel)
        worst = max(worst, float((got - want).norm() / want.norm()))
    _report("compiled_vocoder", {"relative_distance_to_eager_half": worst})
    assert worst < 2e-3, worst


def test_qkv_rope_gemm_matches_its_reference(torch_cuda: Any) -> None:
    """QuACK's q/k/v GEMM with the bias and the rotation in its epilogue (engine/fused_gemm.py)
    against the same math in fp32, at the bench's shape; its frequency table is QuACK's own."""
    from ishowttsd.engine import fused_gemm

    torch = torch_cuda
    if not fused_gemm.qkv_rope_works(torch.device("cuda"), torch.float16):
        pytest.skip("quack-kernels (it comes with flash-attn-4) is not installed or does not run here")
    from quack.epilogue.rotary import make_interleaved_inv_freq

    inv_freq = 1.0 / (10000 ** (torch.arange(0, 64, 2, device="cuda", dtype=torch.float32) / 64))
    freq = fused_gemm.rope_frequencies(inv_freq, 16, 64)
    assert torch.equal(freq, make_interleaved_inv_freq(inv_freq, 2 * 16 * 64, 16 * 64)[None].float())
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2 * 1472, 1024, device="cuda", dtype=torch.float16, generator=gen)
    weight = torch.randn(3072, 1024, device="cuda", dtype=torch.float16, generator=gen) / 32
    bias = torch.randn(3072, device="cuda", dtype=torch.float16, generator=gen) * 0.1
    pos = fused_gemm.rope_positions(1472, 2, torch.device("cuda"))
    got = fused_gemm.qkv_rope(x, weight, bias, pos, freq).float()
    want = fused_gemm.reference(x, weight, bias, pos, freq)
    err = float((got - want).abs().max() / want.abs().max())
    # As many rows as columns (a guided 1536-frame bucket): the bias must still be per column.
    square = x.new_ones(3072, 1024)
    pos = fused_gemm.rope_positions(1536, 2, torch.device("cuda"))
    got = fused_gemm.qkv_rope(square, weight, bias, pos, freq).float()
    want = fused_gemm.reference(square, weight, bias, pos, freq)
    err_square = float((got - want).abs().max() / want.abs().max())
    _report("qkv_rope_gemm", {"relative_max_error": err, "square": err_square})
    assert err < 2e-3 and err_square < 2e-3, (err, err_square)
