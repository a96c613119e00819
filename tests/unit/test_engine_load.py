"""Loading: untrained mode, seeds, checkpoints in upstream's layouts, local Vocos, bad inputs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ishowttsd.engine import presets
from ishowttsd.engine.f5 import Engine, EngineError
from ishowttsd.engine.spec import ARCHITECTURES, ModelSpec, SynthesisRequest, VoiceSpec
from ishowttsd.engine.vocoder import build_untrained, load_local

REQ = SynthesisRequest(text="Checkpoints must round-trip.", voice_id="default", seed=11)


def _load(weights: str = "untrained", vocoder: str = "untrained", **kw: Any) -> Engine:
    spec = ModelSpec(architecture="tiny", weights=weights, **{"device": "cpu", **kw})
    return Engine.load(spec, vocoder=vocoder)


def _say(engine: Engine) -> np.ndarray:
    return engine.synthesize(engine.prepare_voice(VoiceSpec(id="default")), REQ).audio


def test_untrained_tiny_loads_and_says_so(tiny_engine: Any) -> None:
    info = tiny_engine.info
    assert info.untrained and info.weights == "untrained" and info.architecture == "tiny"
    assert info.device == "cpu" and info.precision == "fp32" and info.gpu_name is None
    assert 10_000 < info.parameters < 2_000_000
    assert info.vocab_size == 2545 and info.f5_tts_version == "1.1.22"
    assert info.as_dict()["untrained"] is True
    messages: list[str] = []
    Engine.load(
        ModelSpec(architecture="tiny", weights="untrained", device="cpu"), vocoder="untrained", progress=messages.append
    )
    assert any("untrained" in m for m in messages)


def test_presets_cover_every_architecture() -> None:
    assert set(presets.PRESETS) == set(ARCHITECTURES)
    base = presets.get_preset("F5TTS_v1_Base").dit
    assert (base["dim"], base["depth"], base["heads"], base["text_dim"], base["conv_layers"]) == (1024, 22, 16, 512, 4)
    assert presets.get_preset("F5TTS_Base").dit["pe_attn_head"] == 1
    assert presets.get_preset("F5TTS_v1_Small").dit["dim"] == 768


def test_same_seed_same_network_other_seed_other_network(tiny_engine: Any) -> None:
    torch.manual_seed(999)  # global RNG state must not matter
    again = _load()
    other = _load(seed=1)
    for (name, a), b in zip(tiny_engine.dit.state_dict().items(), again.dit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(tiny_engine.dit.proj_out.weight, other.dit.proj_out.weight)
    assert np.array_equal(_say(tiny_engine), _say(again))
    assert not np.array_equal(_say(tiny_engine), _say(other))


def _ema_state(engine: Engine) -> dict[str, torch.Tensor]:
    state = {f"ema_model.transformer.{k}": v.clone().contiguous() for k, v in engine.dit.state_dict().items()}
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(1250000)
    return state


def test_checkpoint_round_trip_safetensors_and_pt(tiny_engine: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    expected = _say(tiny_engine)
    flat = tmp_path / "model_1.safetensors"
    save_file(_ema_state(tiny_engine), str(flat))
    # upstream .pt: EMA weights next to (different) online weights and trainer state
    pt = tmp_path / "model_1.pt"
    online = {f"transformer.{k}": torch.zeros_like(v) for k, v in tiny_engine.dit.state_dict().items()}
    torch.save({"ema_model_state_dict": _ema_state(tiny_engine), "model_state_dict": online, "step": 7}, pt)
    # and a bare state dict without the EMA prefix
    bare = tmp_path / "bare.safetensors"
    save_file({f"transformer.{k}": v.clone().contiguous() for k, v in tiny_engine.dit.state_dict().items()}, str(bare))
    for path in (flat, pt, bare):
        # A different seed, so every DiT weight must come from the file; the untrained vocoder
        # is seeded too, so borrow the reference engine's to compare the audio.
        engine = _load(weights=str(path), seed=5)
        assert not engine.info.untrained and engine.info.weights == str(path)
        for (name, a), b in zip(tiny_engine.dit.state_dict().items(), engine.dit.state_dict().values(), strict=True):
            assert torch.equal(a, b), (path.name, name)
        engine.vocoder = tiny_engine.vocoder
        assert np.array_equal(_say(engine), expected), path.name


def test_checkpoint_errors_are_clear(tiny_engine: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(EngineError, match="not found"):
        _load(weights=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="cannot be read"):
        _load(weights=str(junk))
    state = _ema_state(tiny_engine)
    del state["ema_model.transformer.proj_out.weight"]
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(EngineError, match=r"does not fit architecture tiny: missing: proj_out\.weight"):
        _load(weights=str(partial))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"{c}\n" for c in " abcdefg"), encoding="utf-8")
    full = tmp_path / "full.safetensors"
    save_file(_ema_state(tiny_engine), str(full))
    with pytest.raises(EngineError, match="vocab of 2545 tokens, but the vocab file has 8"):
        _load(weights=str(full), vocab=str(vocab))


@pytest.mark.parametrize(
    ("field", "value", "match"), [("device", "cuda", "CUDA is not available"), ("device", "tpu", "unknown device")]
)
def test_bad_device_is_an_engine_error(field: str, value: str, match: str) -> None:
    with pytest.raises(EngineError, match=match):
        _load(**{field: value})


def _hub_style_vocos(directory: Path, seed: int = 3) -> Any:
    """A small Vocos saved the way charactr/vocos-mel-24khz is laid out on the hub."""
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    torch.manual_seed(seed)
    vocos = Vocos(
        feature_extractor=MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100),
        backbone=VocosBackbone(input_channels=100, dim=32, intermediate_dim=64, num_layers=2),
        head=ISTFTHead(dim=32, n_fft=1024, hop_length=256, padding="same"),
    ).eval()
    directory.mkdir()
    torch.save(vocos.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.yaml").write_text(
        textwrap.dedent(
            """\
            feature_extractor:
              class_path: vocos.feature_extractors.MelSpectrogramFeatures
              init_args: {sample_rate: 24000, n_fft: 1024, hop_length: 256, n_mels: 100, padding: center}
            backbone:
              class_path: vocos.models.VocosBackbone
              init_args: {input_channels: 100, dim: 32, intermediate_dim: 64, num_layers: 2}
            head:
              class_path: vocos.heads.ISTFTHead
              init_args: {dim: 32, n_fft: 1024, hop_length: 256, padding: same}
            """
        ),
        encoding="utf-8",
    )
    return vocos


def test_local_vocos_matches_upstream_decode(tmp_path: Path) -> None:
    """Also at lengths whose inverse FFT runs padded to the next 64 frames (vocoder.FFT_FRAMES)."""
    vocos = _hub_style_vocos(tmp_path / "vocos")
    ours = load_local(tmp_path / "vocos")
    for frames in (80, 128, 131):
        mel = torch.randn(1, 100, frames, generator=torch.Generator().manual_seed(frames))
        with torch.inference_mode():
            torch.testing.assert_close(ours(mel), vocos.decode(mel), rtol=1e-5, atol=1e-6)
    engine = _load(vocoder=str(tmp_path / "vocos"))
    assert engine.info.vocoder == str(tmp_path / "vocos")
    assert np.all(np.isfinite(_say(engine)))


def test_untrained_vocoder_is_seeded() -> None:
    shape = presets.get_preset("tiny").vocoder
    a, b, c = build_untrained(shape, 0), build_untrained(shape, 0), build_untrained(shape, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.out.weight, c.out.weight)


def test_bad_vocoder_dir(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"config\.yaml not found"):
        _load(vocoder=str(tmp_path))
    (tmp_path / "config.yaml").write_text("feature_extractor: 3\n", encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"junk")
    with pytest.raises(EngineError, match="not a Vocos config"):
        _load(vocoder=str(tmp_path))


def test_engine_import_skips_the_f5_trainer() -> None:
    """f5_tts.model/__init__ imports its Trainer (wandb, accelerate, datasets); we must not.

    Checked in-process (a fresh interpreter costs seconds): the engine is imported by now, and
    only our lazy stand-in for the package (which has no __file__) may be registered."""
    import ishowttsd.engine.f5  # noqa: F401

    package = sys.modules["f5_tts.model"]
    if getattr(package, "__file__", None) is not None:
        pytest.skip("something imported the real f5_tts.model package before the engine")
    assert not [m for m in ("f5_tts.model.trainer", "wandb", "accelerate", "datasets") if m in sys.modules]
    from f5_tts.model import CFM, DiT  # upstream's names still resolve, lazily

    assert (CFM.__module__, DiT.__module__) == ("f5_tts.model.cfm", "f5_tts.model.backbones.dit")
    assert "f5_tts.model.trainer" not in sys.modules


def test_compiled_vocoder_decodes_every_length_with_one_trace() -> None:
    """The compiled vocoder's network is traced once, its frame count dynamic: a livestream has
    a new length on nearly every message, and a re-trace per length cost ~150 ms on the H100
    (why it had stayed eager).  Traced with ``aot_eager`` (dynamo's work without code
    generation): the audio equals the eager vocoder's, and no later length recompiles."""
    from torch._dynamo.utils import counters

    voc = build_untrained(presets.get_preset("tiny").vocoder, 0)
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    fast = voc.compiled(backend="aot_eager")
    # Under 205 frames: on the CPU the conv backend (mkldnn or not) depends on the input's size,
    # which dynamo guards on; the engine compiles the vocoder on CUDA only (GPU test: 64-1500).
    for i, frames in enumerate((80, 131, 200, 64)):
        mel = torch.randn(1, 100, frames, generator=torch.Generator().manual_seed(frames))
        with torch._dynamo.config.patch(error_on_recompile=i > 0), torch.inference_mode():
            torch.testing.assert_close(fast(mel), voc(mel), rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] - before == 1
    assert voc._spectrum is not fast._spectrum, "the eager vocoder is left eager"
    torch._dynamo.reset()
