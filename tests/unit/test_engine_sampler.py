"""Our Euler sampler against f5-tts's own CFM.sample, and the properties issue 8 relies on."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ishowttsd.engine import sampler
from ishowttsd.engine.spec import EPSS_STEPS


def _inputs(engine: Any, voice: Any, text: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    ref = voice.reference
    ref_mel = engine._reference_mel(ref, 0.1)
    ids = engine._tokens(ref.text, text)
    frames = sampler.total_frames(ref.frames + 120, ref_mel.shape[1], ids.shape[1])
    return ref_mel, ids, frames


@pytest.mark.parametrize(("nfe", "cfg", "sway"), [(7, 2.0, -1.0), (9, 2.0, -1.0), (6, 0.0, None), (16, 1.5, 0.5)])
def test_matches_cfm_sample_at_fp32(tiny_engine: Any, default_voice: Any, nfe: int, cfg: float, sway: Any) -> None:
    from f5_tts.model import CFM  # through our lazy package: only the CFM module loads

    dit = tiny_engine.dit
    ref_mel, ids, frames = _inputs(tiny_engine, default_voice, "A short test sentence.")
    cfm = CFM(transformer=dit, vocab_char_map=tiny_engine.vocab).eval()
    with torch.inference_mode():
        expected, _ = cfm.sample(
            cond=ref_mel,
            text=ids,
            duration=frames,
            steps=nfe,
            cfg_strength=cfg,
            sway_sampling_coef=sway,
            seed=1234,
        )
        noise = sampler.initial_noise(frames, 100, torch.Generator().manual_seed(1234), torch.device("cpu"))
        got = sampler.sample(dit, ref_mel, ids, frames, nfe=nfe, cfg_strength=cfg, sway=sway, noise=noise)
    assert got.shape == expected.shape == (1, frames, 100)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-4, float(rel)
    # the generated part must have moved away from the noise, or the comparison proves little
    assert (got[:, ref_mel.shape[1] :] - noise[:, ref_mel.shape[1] :]).abs().mean() > 1e-3
    # and we never used the DiT's per-thread text cache
    assert dit.text_cond is None and dit.text_uncond is None


@pytest.mark.parametrize("nfe", range(1, 65))
def test_time_grid_is_fp32_and_monotonic(nfe: int) -> None:
    for sway in (-1.0, 0.0, 1.0, None):
        t = sampler.timesteps(nfe, sway)
        assert t.dtype == torch.float32
        assert t.shape == (nfe + 1,)
        assert t[0] == 0.0 and abs(float(t[-1]) - 1.0) < 1e-6
        assert bool((t[1:] > t[:-1]).all())


def test_epss_grid_is_upstreams_table() -> None:
    assert [round(float(x) * 32) for x in sampler.timesteps(7, None)] == [0, 2, 4, 6, 8, 16, 24, 32]
    for nfe in EPSS_STEPS:
        assert len(sampler.timesteps(nfe, None)) == nfe + 1


def test_step_is_a_pure_function(tiny_engine: Any, default_voice: Any) -> None:
    ref_mel, ids, frames = _inputs(tiny_engine, default_voice, "Pure.")
    with torch.inference_mode():
        c = sampler.prepare(tiny_engine.dit, ref_mel, ids, frames, nfe=7, cfg_strength=2.0, sway=-1.0)
        x = torch.randn(1, frames, 100, generator=torch.Generator().manual_seed(0))
        a = sampler.euler_step(tiny_engine.dit, c, x, c.time_emb[3], c.dt[3])
        b = sampler.euler_step(tiny_engine.dit, c, x.clone(), c.time_emb[3], c.dt[3])
    assert torch.equal(a, b)
    assert a.dtype == torch.float32
    assert c.cond.shape[0] == c.text.shape[0] == 2  # CFG as one fused batch of two
    assert c.time_emb.shape[:2] == (7, 1) and c.dt.dtype == torch.float32


def test_custom_step_function_is_used(tiny_engine: Any, default_voice: Any) -> None:
    ref_mel, ids, frames = _inputs(tiny_engine, default_voice, "Swap the step.")
    calls: list[int] = []

    def counting_step(dit: Any, c: Any, x: torch.Tensor, t_emb: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return sampler.euler_step(dit, c, x, t_emb, dt)

    noise = torch.zeros(1, frames, 100)
    sampler.sample(
        tiny_engine.dit, ref_mel, ids, frames, nfe=5, cfg_strength=2.0, sway=-1.0, noise=noise, step=counting_step
    )
    assert len(calls) == 5


@pytest.mark.parametrize(
    "text",
    ["A short test sentence.", "你好，世界。今天天气很好", "Mixed 中文 and English; “quotes” ‘too’", "€ ü ß ✓"],
)
def test_tokens_are_upstreams_ids(tiny_engine: Any, text: str) -> None:
    """The engine's token ids, made in one step, are what upstream's two steps make."""
    from ishowttsd.engine.upstream import convert_char_to_pinyin, list_str_to_idx

    ref = "Some call me nature, others call me mother nature. "
    expected = list_str_to_idx(convert_char_to_pinyin([ref + text]), tiny_engine.vocab)
    got = tiny_engine._tokens(ref, text)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)
