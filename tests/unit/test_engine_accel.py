"""The bucketed fast path (issue 8) computes what the eager sampler computes.

Padding a solve up to its length bucket must not change the real frames: attention masks the
padded keys and the position convs zero the padding.  On the CPU this runs eager (compile and
CUDA graphs are GPU-only); tests/gpu/ checks the compiled and captured versions on the H100.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ishowttsd.engine import accel, sampler
from ishowttsd.engine.presets import get_preset


def _solve_both(dit: Any, engine: Any, voice: Any, extra_frames: int, nfe: int, cfg: float) -> tuple[Any, Any, int]:
    ref = voice.reference
    ref_mel = engine._reference_mel(ref, 0.1)
    ids = engine._tokens(ref.text, "Padding must not change a single real frame.")
    frames = sampler.total_frames(ref.frames + extra_frames, ref_mel.shape[1], ids.shape[1])
    noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(7), torch.device("cpu"))
    fast = accel.FastSolver(dit, torch.device("cpu"), compile=False, graphs=False)
    with torch.inference_mode():
        want = sampler.sample(dit, ref_mel, ids, frames, nfe=nfe, cfg_strength=cfg, sway=-1.0, noise=noise)
        got = fast.sample(ref_mel, ids, frames, nfe=nfe, cfg_strength=cfg, sway=-1.0, noise=noise)
    return want, got, frames


@pytest.mark.parametrize(("extra", "nfe", "cfg"), [(101, 7, 2.0), (37, 6, 0.0), (200, 16, 1.5)])
def test_padded_masked_solve_matches_eager(tiny_engine: Any, default_voice: Any, extra: int, nfe: int,
                                           cfg: float) -> None:
    want, got, frames = _solve_both(tiny_engine.dit, tiny_engine, default_voice, extra, nfe, cfg)
    assert accel.bucket(frames) > frames, "the case must actually pad"
    assert got.shape == want.shape
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-5, rel


def test_rope_on_some_heads_and_unmasked_text(tiny_engine: Any, default_voice: Any) -> None:
    """F5TTS_Base's variant: RoPE on the first head only, text embedding without padding masks."""
    from ishowttsd.engine.upstream import DiT

    kwargs = {**get_preset("tiny").dit, "heads": 2, "pe_attn_head": 1, "text_mask_padding": False,
              "text_num_embeds": len(tiny_engine.vocab), "mel_dim": 100}
    torch.manual_seed(3)
    dit = DiT(**kwargs).eval().requires_grad_(False)
    for m in dit.modules():  # wake the zero-initialised layers, as untrained mode does
        if isinstance(m, torch.nn.Linear) and not torch.any(m.weight):
            torch.nn.init.normal_(m.weight, std=0.02)
    want, got, _ = _solve_both(dit, tiny_engine, default_voice, 90, 7, 2.0)
    rel = float((got - want).norm() / want.norm())
    assert rel < 1e-5, rel


def test_buckets() -> None:
    assert accel.bucket(1) == accel.BUCKET_FRAMES
    assert accel.bucket(accel.BUCKET_FRAMES) == accel.BUCKET_FRAMES
    assert accel.bucket(1457) == 1472
    assert accel.bucket(1457, 128) == 1536


def test_compile_and_graphs_are_noops_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec

    with caplog.at_level(logging.INFO, logger="ishowttsd.engine"):
        eng = Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu", compile=True,
                                    cuda_graphs=True), vocoder="untrained")
    assert eng.fast is None and not eng.info.compiled and not eng.info.cuda_graphs
    assert any("GPU-only" in r.getMessage() for r in caplog.records)
