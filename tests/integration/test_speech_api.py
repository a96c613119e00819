"""Issue 3: speech through the real daemon (tiny untrained model on CPU)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_harness import get, post_json, running_daemon

SENTENCE = "Welcome back to the stream, everyone."


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("speech")
    bad = workdir / "broken.wav"
    bad.write_bytes(b"this is not audio")
    config = f"""
[limits]
queue_size = 4
max_chars = 600
[[voices]]
id = "default"
reference_text = "Some call me nature, others call me mother nature."
[[voices]]
id = "broken"
reference_audio = "{bad}"
reference_text = "Nothing."
"""
    with running_daemon(workdir, config=config) as d:
        yield d


def wait_done(daemon, match, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    """The request's log line is written just after its last byte: wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in daemon.events() if e.get("event") == "synthesis done" and match(e)]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError("no matching 'synthesis done' line")


def decode(body: bytes) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(body), dtype="float32")
    return audio, sr


def test_openai_client_gets_a_24k_wav_of_plausible_length(daemon) -> None:  # type: ignore[no-untyped-def]
    from openai import OpenAI

    client = OpenAI(base_url=daemon.url + "/v1", api_key="not-needed")
    short = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there!", response_format="wav")
    audio, sr = decode(short.content)
    assert sr == 24000 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    longer = client.audio.speech.create(model="tts-1", voice="default", input=SENTENCE * 3, response_format="wav")
    long_audio, _ = decode(longer.content)
    short_s, long_s = len(audio) / sr, len(long_audio) / sr
    # The duration follows the reference's speaking rate: ~0.1 s per character here.
    assert 0.3 < short_s < 3.0, short_s
    assert 4.0 < long_s < 20.0, long_s


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_formats_decode(daemon, fmt: str) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = post_json(daemon.url + "/v1/audio/speech",
                                      {"input": SENTENCE, "voice": "default", "response_format": fmt})
    assert status == 200, body
    audio, sr = decode(body)
    assert sr in (24000, 48000) and len(audio) / sr > 0.5
    assert headers["X-Untrained-Model"] == "true"


def test_pcm_is_s16le_mono(daemon) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = post_json(daemon.url + "/v1/audio/speech",
                                      {"input": SENTENCE, "response_format": "pcm", "seed": 7})
    assert status == 200 and headers["Content-Type"].startswith("audio/pcm")
    pcm = np.frombuffer(body, dtype="<i2")
    _, _, wav = post_json(daemon.url + "/v1/audio/speech", {"input": SENTENCE, "response_format": "wav", "seed": 7})
    audio, _ = sf.read(io.BytesIO(wav), dtype="int16")
    assert len(body) % 2 == 0 and np.array_equal(pcm, audio), "same seed, same samples"


def test_ishowtts_api_round_trips_base64_wav(daemon) -> None:  # type: ignore[no-untyped-def]
    status, _, body = post_json(daemon.url + "/api/tts", {"text": SENTENCE, "voice_id": "default", "nfe_step": 6,
                                                         "seed": 3, "speed": 1.2})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["format"] == "audio/wav" and answer["sample_rate"] == 24000 and answer["voice_id"] == "default"
    audio, sr = decode(base64.b64decode(answer["audio_base64"]))
    assert sr == 24000 and len(audio) == answer["waveform_len"]
    assert re.fullmatch(r"[0-9a-f]{16}", answer["request_id"])
    done = wait_done(daemon, lambda e: e.get("endpoint") == "/api/tts")
    assert done["nfe"] == 6


def test_streaming_sends_first_audio_before_the_last_chunk_is_computed(daemon) -> None:  # type: ignore[no-untyped-def]
    text = " ".join([
        "Before we dive into today's game, I want to thank everyone who stuck around last night.",
        "We went three hours longer than planned, and that was the most fun I have had in months.",
        "Tonight we pick up right where we left off, at the bottom of the old mine.",
        "Keep the suggestions coming, but please, no spoilers for the ending.",
        "Thanks for the follows, and welcome to everyone who just arrived.",
        "Grab a drink, this will take a while.",
    ])
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    sent = time.monotonic()
    conn.request("POST", "/v1/audio/speech", json.dumps({"input": text, "response_format": "pcm", "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    arrivals: list[tuple[float, int]] = []
    while True:
        piece = resp.read1(1 << 20)
        if not piece:
            break
        arrivals.append((time.monotonic() - sent, len(piece)))
    conn.close()
    total = sum(n for _, n in arrivals)
    first_t, last_t = arrivals[0][0], arrivals[-1][0]
    done = wait_done(daemon, lambda e: "time_to_first_audio_s" in e and e["text_len"] == len(text))
    assert done["chunks"] >= 3, done
    # The first audio went out after the first chunk, not after all of them: on the server,
    # well before the compute was done; on the wire, before the last bytes arrived.
    compute = done["text_prep_s"] + done["ode_s"] + done["vocoder_s"]
    assert done["time_to_first_audio_s"] < 0.75 * compute, done
    assert first_t < last_t and arrivals[0][1] < total / 2, arrivals[:3]


BAD_INPUTS = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"voice": "default"}).encode(), 400, "missing_field"),
    (json.dumps({"input": "   "}).encode(), 400, "empty_input"),
    (json.dumps({"input": 42}).encode(), 400, "invalid_type"),
    (json.dumps({"input": "hi", "voice": "nobody-here"}).encode(), 400, "unknown_voice"),
    (json.dumps({"input": "hi", "response_format": "aac"}).encode(), 400, "unsupported_format"),
    (json.dumps({"input": "hi", "response_format": "ogg-vorbis"}).encode(), 400, "unsupported_format"),
    (json.dumps({"input": "hi", "speed": 9}).encode(), 400, "out_of_range"),
    (json.dumps({"input": "hi", "speed": "fast"}).encode(), 400, "invalid_type"),
    (json.dumps({"input": "hi", "nfe": 0}).encode(), 400, "out_of_range"),
    (json.dumps({"input": "hi", "nfe": 65}).encode(), 400, "out_of_range"),
    (json.dumps({"input": "hi", "nfe": 6.5}).encode(), 400, "invalid_type"),
    (json.dumps({"input": "hi", "seed": -1}).encode(), 400, "out_of_range"),
    (json.dumps({"input": "hi", "seed": True}).encode(), 400, "invalid_type"),
    (json.dumps({"input": "x" * 601}).encode(), 413, "input_too_long"),
    (json.dumps({"input": "hi", "pad": "x" * 2_000_000}).encode(), 413, "body_too_large"),
    (json.dumps({"input": "hi", "voice": "broken"}).encode(), 400, "unknown_voice"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_INPUTS)
def test_bad_input_gets_4xx_json_and_daemon_keeps_serving(daemon, body: bytes, status: int,  # type: ignore[no-untyped-def]
                                                           code: str) -> None:
    got, _, answer = post_json(daemon.url + "/v1/audio/speech", body)
    assert got == status, answer
    error = json.loads(answer)["error"]
    assert error["code"] == code and error["message"]
    assert get(daemon.url + "/healthz")[0] == 200


def test_ishowtts_bad_inputs(daemon) -> None:  # type: ignore[no-untyped-def]
    for body, code in (({"text": ""}, "empty_input"), ({"text": "hi", "nfe_step": 100}, "out_of_range"),
                       ({"text": "hi", "voice_id": "ghost"}, "unknown_voice"), ({}, "missing_field")):
        status, _, answer = post_json(daemon.url + "/api/tts", body)
        assert status == 400 and json.loads(answer)["error"]["code"] == code
    assert get(daemon.url + "/nope")[0] == 404


def test_30_concurrent_clients_against_queue_4(daemon) -> None:  # type: ignore[no-untyped-def]
    outcomes: list[tuple[int, str | None]] = []

    def client(i: int) -> None:
        status, headers, _ = post_json(daemon.url + "/v1/audio/speech",
                                       {"input": f"{SENTENCE} Number {i}.", "response_format": "wav"})
        outcomes.append((status, headers.get("Retry-After")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 30
    statuses = {s for s, _ in outcomes}
    assert statuses <= {200, 503}, outcomes
    assert 200 in statuses
    assert all(retry for s, retry in outcomes if s == 503), "every 503 carries Retry-After"
    assert get(daemon.url + "/healthz")[0] == 200 and get(daemon.url + "/readyz")[0] == 200


def test_voices_are_preprocessed_once(daemon) -> None:  # type: ignore[no-untyped-def]
    def decodes() -> float:
        metrics = get(daemon.url + "/metrics")[1].decode()
        return float(re.search(r"^ishowtts_reference_decodes (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]

    post_json(daemon.url + "/v1/audio/speech", {"input": "one", "response_format": "wav"})
    before = decodes()
    for text in ("two", "three"):
        assert post_json(daemon.url + "/v1/audio/speech", {"input": text, "response_format": "wav"})[0] == 200
    assert decodes() == before


def test_voice_listings_and_broken_voice_reported(daemon) -> None:  # type: ignore[no-untyped-def]
    status, body = get(daemon.url + "/v1/audio/voices")
    listing = json.loads(body)
    assert status == 200 and listing["default"] == "default"
    by_id = {v["id"]: v for v in listing["voices"]}
    assert by_id["default"]["loaded"] and by_id["default"]["language"] == "en" and by_id["default"]["nfe"] == 7
    assert not by_id["broken"]["loaded"] and "broken.wav" in by_id["broken"]["error"]
    status, body = get(daemon.url + "/api/voices")
    assert status == 200 and {v["id"] for v in json.loads(body)} == {"default", "broken"}


def test_health_ready_metrics(daemon) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(get(daemon.url + "/healthz")[1]) == {"status": "ok"}
    ready = json.loads(get(daemon.url + "/readyz")[1])
    assert ready["status"] == "ready" and ready["untrained"] is True
    metrics = get(daemon.url + "/metrics")[1].decode()
    for name in ("ishowtts_requests_total", "ishowtts_request_latency_seconds_bucket", "ishowtts_rtf_bucket",
                 "ishowtts_time_to_first_audio_seconds", "ishowtts_queue_depth", "ishowtts_nfe 7.0",
                 "ishowtts_model_info"):
        assert name in metrics, name


def test_readyz_is_503_until_warm(tmp_path: Path) -> None:
    with running_daemon(tmp_path, wait=False) as d:
        seen: set[int] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, body = get(d.url + "/readyz", timeout=2)
            except OSError:
                time.sleep(0.05)
                continue
            seen.add(status)
            if status == 503:
                assert json.loads(body)["reason"]
            if status == 200:
                break
            time.sleep(0.02)
        assert 200 in seen
        assert d.notify is not None
        d.notify.wait_for(lambda m: "READY=1" in m, 10)  # the datagram may trail the HTTP answer


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/audio/speech", {"input": SENTENCE}, 200),
        ("/v1/audio/speech", {"input": SENTENCE, "response_format": "pcm", "stream": True}, 200),
        ("/api/tts", {"text": SENTENCE}, 200),
        ("/v1/audio/speech", {"input": ""}, 400),
    ],
)
def test_every_answer_names_its_request_and_is_logged_after_it_is_sent(  # type: ignore[no-untyped-def]
    daemon, path: str, body: dict, status: int  # type: ignore[type-arg]
) -> None:
    """The X-Request-Id the client sent comes back (whole responses, streams, errors), and the
    request's log line, written once the response is out, carries the same id."""
    kind = "stream" if body.get("stream") else "whole"
    request_id = f"rid-{path.strip('/').replace('/', '-')}-{kind}-{status}"
    got_status, headers, data = post_json(daemon.url + path, body, headers={"X-Request-Id": request_id})
    assert got_status == status, data[:300]
    assert headers.get("X-Request-Id") == request_id
    if status == 200:
        assert len(data) > 1000
        done = wait_done(daemon, lambda e: e.get("request_id") == request_id)
        assert done["endpoint"] == path


def test_warm_up_covers_every_configured_guidance(tmp_path: Path) -> None:
    """Guided and unguided (cfg_strength 0) requests run different shapes on the GPU: the daemon
    warms up each guidance its config can send, the default's and each voice's."""
    config = """
[synthesis]
cfg_strength = 2.0
[[voices]]
id = "default"
reference_text = "Some call me nature, others call me mother nature."
[[voices]]
id = "plain"
reference_text = "Some call me nature, others call me mother nature."
cfg_strength = 0.0
"""
    with running_daemon(tmp_path, config=config) as d:
        warmed = sorted(e["cfg_strength"] for e in d.events() if e.get("event") == "warm-up done")
        assert warmed == [0.0, 2.0]
        status, _, body = post_json(d.url + "/v1/audio/speech", {"input": SENTENCE, "voice": "plain"})
        assert status == 200 and len(decode(body)[0]) > 24000
