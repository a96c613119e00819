"""The bucketed fast path (issue 8) computes what the eager sampler computes.

Padding a solve up to its length bucket must not change the real frames: attention masks the
padded keys and the position convs zero the padding.  On the CPU this runs eager (compile and
CUDA graphs are GPU-only); tests/gpu/ checks the compiled and captured versions on the H100.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ishowttsd.engine import accel, sampler
from ishowttsd.engine.f5 import _randomise_zero_init
from ishowttsd.engine.presets import get_preset


def _solve_both(
    dit: Any, engine: Any, voice: Any, extra_frames: int, nfe: int, cfg: float, attention: str = "column"
) -> tuple[Any, Any, int]:
    ref = voice.reference
    ref_mel = engine._reference_mel(ref, 0.1)
    ids = engine._tokens(ref.text, "Padding must not change a single real frame.")
    frames = sampler.total_frames(ref.frames + extra_frames, ref_mel.shape[1], ids.shape[1])
    noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(7), torch.device("cpu"))
    fast = accel.FastSolver(dit, torch.device("cpu"), compile=False, graphs=False)
    # Where whole heads rotate (kernels.rotate_qkv) the CPU's fast path uses the key column;
    # FlashAttention is CUDA-only (tests/gpu).  Otherwise only the mask can leave out padding.
    assert fast.weights.attention == ("column" if fast.weights.fused_rotation else "mask")
    if fast.weights.fused_rotation:
        fast.weights = fast.weights._replace(attention=attention)
    with torch.inference_mode():
        want = sampler.sample(dit, ref_mel, ids, frames, nfe=nfe, cfg_strength=cfg, sway=-1.0, noise=noise)
        got = fast.sample(ref_mel, ids, frames, nfe=nfe, cfg_strength=cfg, sway=-1.0, noise=noise)
    return want, got, frames


@pytest.mark.parametrize(
    ("extra", "nfe", "cfg", "attention"),
    [(101, 7, 2.0, "column"), (37, 6, 0.0, "column"), (200, 16, 1.5, "column"), (101, 7, 2.0, "mask")],
)
def test_padded_masked_solve_matches_eager(
    tiny_engine: Any, default_voice: Any, extra: int, nfe: int, cfg: float, attention: str
) -> None:
    """With the key column (unmasked attention) and with SDPA's mask (the fallback)."""
    want, got, frames = _solve_both(tiny_engine.dit, tiny_engine, default_voice, extra, nfe, cfg, attention)
    assert accel.bucket(frames) > frames, "the case must actually pad"
    assert got.shape == want.shape
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-5, rel


def _varlen_on_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, seqused_k: torch.Tensor) -> torch.Tensor:
    """What flash-attn-4's kernel computes (it needs an NVIDIA GPU): row g attends to its first
    ``seqused_k[g]`` keys only."""
    rows = []
    for g, n in enumerate(seqused_k.tolist()):
        qt, kt, vt = q[g : g + 1].transpose(1, 2), k[g : g + 1, :n].transpose(1, 2), v[g : g + 1, :n].transpose(1, 2)
        rows.append(torch.nn.functional.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2))
    return torch.cat(rows)


def test_flash_attention_path_gets_each_rows_key_count(
    tiny_engine: Any, default_voice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FlashAttention path (engine/flash.py) through the padded solve, guided and not: the
    key counts reach the kernel for every CFG row, so the solve equals eager.  The kernel itself
    is checked against fp32 on the GPU (tests/gpu)."""
    from ishowttsd.engine import flash

    monkeypatch.setattr(flash, "_varlen", lambda: _varlen_on_cpu)
    for cfg in (2.0, 0.0):
        want, got, frames = _solve_both(tiny_engine.dit, tiny_engine, default_voice, 101, 7, cfg, "flash")
        assert accel.bucket(frames) > frames, "the case must actually pad"
        rel = float((got - want).norm() / want.norm())
        assert rel < 1e-5, (cfg, rel)


def _rope_gemm_on_cpu(x: torch.Tensor, weight_t: torch.Tensor, *, pos: torch.Tensor, freq: torch.Tensor,
                      bias: torch.Tensor, tuned: bool) -> dict[str, torch.Tensor]:
    """What QuACK's rotating GEMM computes (it needs an NVIDIA GPU), called as fused_gemm calls it."""
    from ishowttsd.engine import fused_gemm

    return {"D": fused_gemm.reference(x, weight_t.t(), bias[0], pos, freq).to(x.dtype)}


def test_qkv_epilogue_path_rotates_upstreams_pairs_per_row(
    tiny_engine: Any, default_voice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The q/k/v product with the bias and the rotation in QuACK's epilogue (engine/fused_gemm.py)
    through the padded solve, guided and not: weights in upstream's order, each CFG row's own
    positions, v passed through, FlashAttention reading strided views.  The solve equals eager
    (to the rounding of fp32 angles, which upstream computes in fp32 and this in float-float).
    The kernel itself is checked against its reference on the GPU (tests/gpu)."""
    from ishowttsd.engine import flash, fused_gemm

    monkeypatch.setattr(flash, "_varlen", lambda: _varlen_on_cpu)
    monkeypatch.setattr(flash, "flash_attention_works", lambda _d, _t: True)
    monkeypatch.setattr(fused_gemm, "qkv_rope_works", lambda _d, _t: True)
    monkeypatch.setattr(fused_gemm, "_epilogue", lambda: _rope_gemm_on_cpu)
    dit = tiny_engine.dit
    weights = accel.fast_weights(dit)
    assert weights.attention == "flash" and weights.qkv_rope is not None and not weights.half_split
    assert torch.equal(weights.qkv[0][0][: dit.transformer_blocks[0].attn.to_q.out_features],
                       dit.transformer_blocks[0].attn.to_q.weight)  # upstream's order
    assert accel.fast_weights(dit, qkv_epilogue=False).qkv_rope is None
    ref = default_voice.reference
    ref_mel = tiny_engine._reference_mel(ref, 0.1)
    ids = tiny_engine._tokens(ref.text, "Padding must not change a single real frame.")
    frames = sampler.total_frames(ref.frames + 101, ref_mel.shape[1], ids.shape[1])
    assert accel.bucket(frames) > frames, "the case must actually pad"
    noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(7), torch.device("cpu"))
    for cfg in (2.0, 0.0):
        fast = accel.FastSolver(dit, torch.device("cpu"), compile=False, graphs=False)
        assert fast.weights.qkv_rope is not None
        with torch.inference_mode():
            want = sampler.sample(dit, ref_mel, ids, frames, nfe=7, cfg_strength=cfg, sway=-1.0, noise=noise)
            got = fast.sample(ref_mel, ids, frames, nfe=7, cfg_strength=cfg, sway=-1.0, noise=noise)
        rel = float((got - want).norm() / want.norm())
        assert rel < 1e-5, (cfg, rel)


def _three_blocks(engine: Any) -> Any:
    """The tiny preset with three blocks instead of one (seeded, zero-init layers randomised)."""
    from ishowttsd.engine.upstream import DiT

    kwargs = {**get_preset("tiny").dit, "depth": 3, "text_num_embeds": len(engine.vocab), "mel_dim": 100}
    torch.manual_seed(4)
    dit = DiT(**kwargs).eval().requires_grad_(False)
    _randomise_zero_init(dit)
    return dit


def test_deeper_model_takes_each_blocks_own_modulation(tiny_engine: Any, default_voice: Any) -> None:
    """Three blocks (the tiny preset has one): each step's precomputed AdaLN modulations must
    reach the right block and the final norm (accel.modulations)."""
    dit = _three_blocks(tiny_engine)
    time_emb, _ = sampler.time_embeddings(dit, 7, -1.0, torch.device("cpu"))
    mods = accel.modulations(dit, time_emb)
    assert mods.shape == (7, 4, 1, 6 * 32)
    t = time_emb[5]
    torch.testing.assert_close(mods[5, 2], dit.transformer_blocks[2].attn_norm.linear(torch.nn.functional.silu(t)))
    torch.testing.assert_close(mods[5, 3, :, :64], dit.norm_out.linear(torch.nn.functional.silu(t)))
    want, got, _ = _solve_both(dit, tiny_engine, default_voice, 60, 7, 2.0)
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-5, rel


def test_rope_on_some_heads_and_unmasked_text(tiny_engine: Any, default_voice: Any) -> None:
    """F5TTS_Base's variant: RoPE on the first head only, text embedding without padding masks."""
    from ishowttsd.engine.upstream import DiT

    kwargs = {
        **get_preset("tiny").dit,
        "heads": 2,
        "pe_attn_head": 1,
        "text_mask_padding": False,
        "text_num_embeds": len(tiny_engine.vocab),
        "mel_dim": 100,
    }
    torch.manual_seed(3)
    dit = DiT(**kwargs).eval().requires_grad_(False)
    _randomise_zero_init(dit)  # wake the zero-initialised layers, as untrained mode does
    want, got, _ = _solve_both(dit, tiny_engine, default_voice, 90, 7, 2.0)
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-5, rel


def test_buckets() -> None:
    assert accel.bucket(1) == accel.BUCKET_FRAMES
    assert accel.bucket(accel.BUCKET_FRAMES) == accel.BUCKET_FRAMES
    assert accel.bucket(1457) == 1472
    assert accel.bucket(1457, 128) == 1536


@pytest.mark.parametrize(("backend", "pdl", "options"), [
    ("inductor", True, {"triton.enable_pdl": True}),
    ("inductor", False, None),
    ("aot_eager", True, None),  # only inductor takes options
])
def test_pdl_reaches_every_region_compile(
    monkeypatch: pytest.MonkeyPatch, backend: str, pdl: bool, options: Any
) -> None:
    """Programmatic dependent launch is inductor's switch, given to each region's compile; the
    CPU never has it (nor a card before Hopper: the Jetson Orin is sm_87)."""
    seen: list[Any] = []

    def record(fn: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["options"])
        return fn

    monkeypatch.setattr(torch, "compile", record)
    accel.compiled_regions(True, backend, pdl)
    assert seen == [options] * 4
    assert not accel.pdl_supported(torch.device("cpu"))


def test_compile_and_graphs_are_noops_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec

    with caplog.at_level(logging.INFO, logger="ishowttsd.engine"):
        eng = Engine.load(
            ModelSpec(architecture="tiny", weights="untrained", device="cpu", compile=True, cuda_graphs=True),
            vocoder="untrained",
        )
    assert eng.fast is None and not eng.info.compiled and not eng.info.cuda_graphs
    assert any("GPU-only" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("guided", [True, False])
def test_text_embedding_at_bucket_length_equals_exact_length(
    tiny_engine: Any, mask_padding: bool, guided: bool
) -> None:
    """The text encoder's GRN takes a norm over the whole sequence, so padding must be left out."""
    text_embed = tiny_engine.dit.text_embed
    text_embed.mask_padding, saved = mask_padding, text_embed.mask_padding
    try:
        ids = tiny_engine._tokens("Some call me nature.", "Padding must not change the text embedding.")
        n = ids.shape[1] + 40
        padded = accel.bucket(n) + accel.BUCKET_FRAMES
        tokens = torch.zeros(1, padded, dtype=torch.long)
        tokens[:, : ids.shape[1]] = ids + 1
        real = torch.arange(padded)[None, :] < n
        with torch.inference_mode():
            want = [text_embed(ids, seq_len=n, drop_text=False)]
            if guided:
                want.append(text_embed(ids, seq_len=n, drop_text=True))
            got = accel.masked_text_embedding(text_embed, tokens, real, guided)
    finally:
        text_embed.mask_padding = saved
    want_t = torch.cat(want)
    torch.testing.assert_close(got[:, :n], want_t, rtol=1e-6, atol=1e-6)
    assert not got[:, n:].any(), "padding stays zero"


@pytest.mark.parametrize("cfg", [2.0, 0.0])
def test_batch_of_two_lengths_equals_each_alone(tiny_engine: Any, default_voice: Any, cfg: float) -> None:
    """Two requests of different lengths in one bucket, solved as one batch, give what each
    gives alone: rows never see each other (their own masks, keys and CFG rows)."""
    ref = default_voice.reference
    ref_mel = tiny_engine._reference_mel(ref, 0.1)
    fast = accel.FastSolver(tiny_engine.dit, torch.device("cpu"), compile=False, graphs=False)
    items = []
    for extra, words in ((150, "A first request, rather longer than the second one."), (171, "Second.")):
        ids = tiny_engine._tokens(ref.text, words)
        frames = sampler.total_frames(ref.frames + extra, ref_mel.shape[1], ids.shape[1])
        noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(extra), torch.device("cpu"))
        items.append(accel.BatchItem(ref_mel, ids, frames, noise))
    assert accel.bucket(items[0].frames) == accel.bucket(items[1].frames)
    assert items[0].frames != items[1].frames
    with torch.inference_mode():
        batch = fast.sample_batch(items, nfe=7, cfg_strength=cfg, sway=-1.0)
        alone = [fast.sample_batch([item], nfe=7, cfg_strength=cfg, sway=-1.0)[0] for item in items]
    for got, want in zip(batch, alone, strict=True):
        assert got.shape == want.shape
        assert float((got - want).norm() / want.norm()) < 1e-5


def test_compiled_step_traces_once_for_every_length_bucket(tiny_engine: Any, default_voice: Any) -> None:
    """The compiled regions are traced at the first bucket with only the length symbolic, and
    every later bucket reuses them: dynamo must not recompile (a recompile is seconds of a
    restart on the GPU, or a stall on the first request of a new length).  Traced with the
    ``aot_eager`` backend: dynamo's tracing and guards, without inductor's code generation.
    Three blocks: one compiled block serves every block, the last one (followed by the final
    norm, not a block's) included."""
    from torch._dynamo.utils import counters

    ref = default_voice.reference
    ref_mel = tiny_engine._reference_mel(ref, 0.1)
    ids = tiny_engine._tokens(ref.text, "Every length bucket runs the same compiled code.")
    dit = _three_blocks(tiny_engine)
    eager = accel.FastSolver(dit, torch.device("cpu"), compile=False, graphs=False)
    torch._dynamo.reset()
    graphs_before = counters["stats"]["unique_graphs"]
    fast = accel.FastSolver(dit, torch.device("cpu"), compile=True, graphs=False, backend="aot_eager")
    for i, extra in enumerate((40, 130, 260)):
        frames = sampler.total_frames(ref.frames + extra, ref_mel.shape[1], ids.shape[1])
        noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(extra), torch.device("cpu"))
        # after the first bucket, any recompile raises
        with torch._dynamo.config.patch(error_on_recompile=i > 0), torch.inference_mode():
            got = fast.sample(ref_mel, ids, frames, nfe=6, cfg_strength=2.0, sway=-1.0, noise=noise)
            want = eager.sample(ref_mel, ids, frames, nfe=6, cfg_strength=2.0, sway=-1.0, noise=noise)
        assert float((got - want).norm() / want.norm()) < 1e-5
    assert len({accel.bucket(f) for f in (ref.frames + 40, ref.frames + 260)}) == 2
    assert counters["stats"]["unique_graphs"] - graphs_before == 4  # text, embed, block, finish
    torch._dynamo.reset()


def test_compile_caches_live_under_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor's, Triton's, FlashAttention's (with its compiler's) and QuACK's caches all go
    under the daemon's cache dir, which survives restarts, and not the temp dir."""
    keys = (
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED",
        "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR",
        "CUTE_DSL_CACHE_DIR",
        "QUACK_CACHE_DIR",
    )
    for key in keys:
        monkeypatch.setenv(key, "unset")  # restored after the test
    got = accel.configure_caches(tmp_path)
    assert set(got) == set(keys)
    for key in keys:
        assert os.environ[key] == got[key]
        if key.endswith("_DIR"):
            assert Path(got[key]).is_dir() and Path(got[key]).is_relative_to(tmp_path), key
    assert accel.configure_caches(None) == {}


@pytest.mark.parametrize(("wanted", "kind"), [("auto", "column"), ("cudnn", "column"), ("sdpa", "mask")])
def test_attention_is_chosen_by_config(tiny_engine: Any, wanted: str, kind: str) -> None:
    """``[model] attention``: on the CPU "auto" takes the key column (FlashAttention is
    CUDA-only); a named kernel that runs here is taken as asked."""
    fast = accel.FastSolver(tiny_engine.dit, torch.device("cpu"), compile=False, graphs=False, attention=wanted)
    assert fast.weights.attention == kind
    assert fast.attention == ("cudnn" if kind == "column" else "sdpa")


def test_attention_that_cannot_run_here_is_a_clear_error(tiny_engine: Any) -> None:
    from ishowttsd.engine.errors import EngineError

    with pytest.raises(EngineError, match=r"attention = 'flash' does not run on cpu.*flash-attn-4.*\"auto\""):
        accel.FastSolver(tiny_engine.dit, torch.device("cpu"), compile=False, graphs=False, attention="flash")
