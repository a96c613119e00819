"""Issue 9: the objective NFE quality guard through the real daemon, and on the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from daemon_harness import running_daemon

SELFCHECK = """
[selfcheck]
repeats = 1
warmup = 0
texts_per_category = 1
max_mean_rtf = 100.0
max_rtf = 100.0
max_cv = 100.0
"""


def status(d) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(d.admin("status", "--json").stdout)


def test_validate_rolls_back_when_the_gate_is_impossibly_strict(tmp_path: Path) -> None:
    config = SELFCHECK + "[quality]\nmax_distance = 0.0\nmax_worst_distance = 0.0\n"
    with running_daemon(tmp_path, config=config) as d:
        r = d.admin("set-nfe", "4", "--validate")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "roll" in (r.stdout + r.stderr).lower() and "max_distance" in r.stdout + r.stderr
        st = status(d)
        assert st["nfe"] == 7
        versions = json.loads(d.admin("history", "--json").stdout)
        changed = next(v for v in versions if v["version"] == 1)
        assert changed["validation"]["ok"] is False and changed["validation"]["quality"]["status"] == "fail"
        assert versions[-1]["version"] == 2 and versions[-1]["changes"]["nfe"] == {"old": 4, "new": 7}


def test_validate_keeps_the_value_when_the_gate_is_loose(tmp_path: Path) -> None:
    config = SELFCHECK + "[quality]\nmax_distance = 1000.0\nmax_worst_distance = 1000.0\n"
    with running_daemon(tmp_path, config=config) as d:
        r = d.admin("set-nfe", "6", "--validate")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "untrained" in (r.stdout + r.stderr).lower(), "the untrained caveat is shown"
        assert status(d)["nfe"] == 6
        versions = json.loads(d.admin("history", "--json").stdout)
        assert versions[-1]["version"] == 1 and versions[-1]["validation"]["ok"] is True


def test_quality_samples_writes_the_listening_page(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config=SELFCHECK) as d:
        out = tmp_path / "samples"
        r = d.admin("quality-samples", "--nfe", "6", "--against", "7", "--out", str(out))
        assert r.returncode == 0, r.stderr
        html = (out / "index.html").read_text()
        assert "http://" not in html and "https://" not in html, "self-contained: no network"
        wavs, pngs = sorted(out.rglob("*.wav")), sorted(out.rglob("*.png"))
        assert len(wavs) == 2 * 18 and len(pngs) == 2 * 18
        assert all(w.name in html for w in wavs), "the page plays every clip"
        assert all("nfe" not in w.name for w in wavs), "file names must not reveal which clip is which"


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec, VoiceSpec

    eng = Engine.load(ModelSpec(architecture="tiny", weights="untrained", device="cpu", precision="fp32"),
                      vocoder="untrained")
    return eng, eng.prepare_voice(VoiceSpec(id="default"))


def test_distance_is_zero_for_identical_and_monotone_in_nfe(engine) -> None:  # type: ignore[no-untyped-def]
    from ishowttsd.engine.spec import SynthesisRequest
    from ishowttsd.quality import log_mel_distance

    eng, voice = engine
    text = "Welcome back to the stream, everyone. Today we try something new."

    def audio(nfe: int) -> np.ndarray:
        return eng.synthesize(voice, SynthesisRequest(text=text, voice_id="default", nfe=nfe, seed=7)).audio

    reference = audio(32)
    assert log_mel_distance(reference, audio(32), 24000) == 0.0
    distances = [log_mel_distance(audio(nfe), reference, 24000) for nfe in (16, 8, 4)]
    assert 0 < distances[0] < distances[1] < distances[2], distances
