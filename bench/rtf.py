#!/usr/bin/env python3
"""Speed of ishowttsd against stock f5-tts, in one process and one run (issue 8).

What it measures, on the same card, inputs and NFE:

1. stock f5-tts ``infer_process`` (upstream's CFM + Vocos objects, loaded with the same
   untrained weights, fp16 on CUDA as upstream's ``load_checkpoint`` casts them);
2. the ishowttsd engine called directly, for each acceleration variant (eager, CUDA graphs,
   torch.compile, both), each against an fp32 eager reference for the quality distance;
3. ishowttsd end to end over HTTP: the real daemon as a subprocess (request in, WAV out),
   streaming time to first audio, throughput with 1/4/16/64 clients, and cold start to READY
   with an empty and then a warm compile cache; optionally the daemon's own self-check.  The
   WAV and the first audio are timed twice: by aiohttp's client and by a bare socket client
   (``raw_http.py``), which has almost no client-side work of its own.

Every timed run is preceded by warm-up runs and bracketed by ``torch.cuda.synchronize``
(the engine returns host numpy audio, which synchronises anyway).  Results: median, min, p95.
The headline is the ratio stock / ishowttsd, which holds across cards and noise.

``--tiny --device cpu`` runs the same code on the tiny untrained model in seconds (CI).
Full JSON goes to ``--out``; a markdown table is printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The issue-8 utterance: 109 bytes, which the engine's estimate turns into 1458 frames in all
# (4.96 s reference + 10.59 s generated), the issue's 10.58 s / 1457-frame setup.  Runs 1-5 in
# bench/README.md used a longer text (152 bytes, 14.43 s generated).
TEXT = "Welcome back to the stream, everyone, thanks for the follows and the subs. Stay tuned, and tell your friends."
TINY_TEXT = "Welcome back to the stream everyone, thanks for the follows."
REF_TEXT = "Some call me nature, others call me mother nature."
SEED = 1234
VARIANTS = {  # name -> (compile, cuda_graphs)
    "eager": (False, False),
    "graphs": (False, True),
    "compile": (True, False),
    "compile+graphs": (True, True),
}


# ----------------------------------------------------------------------------- helpers


def stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, max(0, round(0.95 * (len(s) - 1))))]
    return {"median": statistics.median(s), "min": s[0], "p95": p95, "n": len(s)}


def ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


class Results:
    """The run's results, written to disk after every phase so a timeout keeps what finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"phases": {}, "errors": {}}

    def put(self, key: str, value: Any) -> None:
        self.data["phases"][key] = value
        self.save()

    def error(self, key: str, exc: BaseException) -> None:
        self.data["errors"][key] = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"[bench] {key} FAILED: {type(exc).__name__}: {exc}", flush=True)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- engine side


def timed(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, repeats: int) -> tuple[list[float], Any]:
    out = None
    for _ in range(warmup):
        out = fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times, out


def load_engine(args: argparse.Namespace, *, precision: str, compile: bool, graphs: bool, cache_dir: str | None) -> Any:
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.spec import ModelSpec

    spec = ModelSpec(
        architecture=args.arch,
        weights="untrained",
        device=args.device,
        precision=precision,
        compile=compile,
        cuda_graphs=graphs,
    )
    return Engine.load(spec, vocoder="untrained", cache_dir=cache_dir)


def engine_phase(args: argparse.Namespace, res: Results, torch: Any) -> dict[str, Any]:
    """Every variant on the engine directly; the fp32 eager reference for quality."""
    from ishowttsd.engine.spec import SynthesisRequest, VoiceSpec
    from ishowttsd.quality import log_mel_distance

    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    text = TINY_TEXT if args.tiny else TEXT
    voice_spec = VoiceSpec(id="default", reference_text=REF_TEXT)
    out: dict[str, Any] = {"variants": {}, "text_chars": len(text)}

    # fp32 eager: the quality reference (TF32 off so it is real fp32).
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    eng = load_engine(args, precision="fp32", compile=False, graphs=False, cache_dir=None)
    voice = eng.prepare_voice(voice_spec)
    refs: dict[int, Any] = {}
    for nfe in sorted(set(args.nfes) | {7}):
        refs[nfe] = eng.synthesize(voice, SynthesisRequest(text=text, voice_id="default", nfe=nfe, seed=SEED)).audio
    out["fp32_audio_s"] = len(refs[7]) / 24000
    del eng, voice
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    say(f"fp32 reference done ({out['fp32_audio_s']:.2f} s of audio)")

    for name in args.variants:
        comp, graphs = VARIANTS[name]
        try:
            gc.collect()
            base = 0
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            eng = load_engine(args, precision=args.precision, compile=comp, graphs=graphs, cache_dir=args.cache_dir)
            voice = eng.prepare_voice(voice_spec)
            t1 = time.perf_counter()
            eng.warm_up(voice, [7])
            sync()
            t2 = time.perf_counter()
            v: dict[str, Any] = {
                "load_s": t1 - t0,
                "warm_up_s": t2 - t1,
                "precision": eng.precision,
                "compiled": eng.info.compiled,
                "cuda_graphs": eng.info.cuda_graphs,
                "graphs_captured": eng.fast.graph_count if eng.fast is not None else 0,
                "attention": eng.info.attention or "upstream",
                "nfe": {},
            }
            sweep = args.nfes if (name in args.sweep_variants) else [7]
            for nfe in sweep:
                req = SynthesisRequest(text=text, voice_id="default", nfe=nfe, seed=SEED)
                times, syn = timed(lambda req=req, e=eng, vc=voice: e.synthesize(vc, req), sync, args.warmup,
                                   args.repeats)
                st = stats(times)
                dist = log_mel_distance(syn.audio, refs[nfe], 24000) if nfe in refs else None
                v["nfe"][nfe] = {
                    **st,
                    "audio_s": syn.duration_s,
                    "rtf": st["median"] / syn.duration_s,
                    "timings_last": syn.timings,
                    "fp32_fallback": syn.fp32_fallback,
                    "distance_db_vs_fp32_eager": dist,
                }
                say(f"{name} nfe {nfe}: median {ms(st['median'])} ms, p95 {ms(st['p95'])} ms, "
                    f"audio {syn.duration_s:.2f} s, dist {dist if dist is None else round(dist, 3)} dB")
            # Streaming, engine direct: time to the first on_chunk with the API's short first chunk.
            from ishowttsd.api import STREAM_FIRST_CHUNK_BYTES

            firsts = []
            for i in range(args.warmup + max(3, args.repeats // 2)):
                mark: list[float] = []
                sync()
                t0 = time.perf_counter()
                eng.synthesize(
                    voice,
                    SynthesisRequest(text=text, voice_id="default", nfe=7, seed=SEED),
                    on_chunk=lambda a, mark=mark: mark.append(time.perf_counter()) if not mark else None,
                    first_chunk_bytes=STREAM_FIRST_CHUNK_BYTES,
                )
                if i >= args.warmup:  # the first chunk's length is new to the warm-ups above
                    firsts.append(mark[0] - t0)
            v["stream_first_audio"] = stats(firsts)
            if cuda:
                v["peak_gpu_mem_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
                v["gpu_mem_held_before_gib"] = base / 2**30
                v["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
            if eng.fast is not None:
                v["capture_s"] = eng.fast.capture_s
            out["variants"][name] = v
            res.put("engine", out)
            eng = voice = None
            # Compiled code holds the model it was traced with: drop it, so the next
            # variant's memory figures start clean.
            torch._dynamo.reset()
        except Exception as exc:
            res.error(f"engine:{name}", exc)
    return out


def stock_phase(args: argparse.Namespace, res: Results, torch: Any) -> dict[str, Any]:
    """Upstream's infer_process on upstream's own objects, same untrained weights."""
    import soundfile as sf

    from ishowttsd.engine import vocoder as voc_mod
    from ishowttsd.engine.f5 import Engine
    from ishowttsd.engine.paths import default_ref_audio
    from ishowttsd.engine.presets import HOP_LENGTH, N_FFT, N_MELS, WIN_LENGTH, get_preset
    from ishowttsd.engine.spec import ModelSpec
    from ishowttsd.engine.upstream import DiT

    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    import torchaudio  # upstream's loader; newer torchaudio wants torchcodec, which may be absent

    def _load(path: Any, *a: Any, **k: Any) -> tuple[Any, int]:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    torchaudio.load = _load
    from f5_tts.infer import utils_infer
    from f5_tts.model import CFM

    utils_infer.torchaudio.load = _load
    # Same weights as the engine: build the engine (eager, fp32) and copy its DiT.
    eng = Engine.load(ModelSpec(architecture=args.arch, weights="untrained", device=args.device, precision="fp32"),
                      vocoder="untrained")
    preset = get_preset(args.arch)
    dit = DiT(**eng._dit_kwargs)
    dit.load_state_dict(eng.dit.state_dict())
    model = CFM(
        transformer=dit,
        mel_spec_kwargs={"n_fft": N_FFT, "hop_length": HOP_LENGTH, "win_length": WIN_LENGTH,
                         "n_mel_channels": N_MELS, "target_sample_rate": 24000, "mel_spec_type": "vocos"},
        odeint_kwargs={"method": "euler"},
        vocab_char_map=eng.vocab,
    ).to(args.device)
    # upstream load_checkpoint: fp16 on CUDA sm_70+, else fp32
    dtype = torch.float16 if cuda and torch.cuda.get_device_capability()[0] >= 7 else torch.float32
    model = model.to(dtype).eval()
    vocos = voc_mod.build_untrained_vocos(preset.vocoder, 0).to(args.device).eval()
    del eng
    ref_audio = str(default_ref_audio())
    text = TINY_TEXT if args.tiny else TEXT
    out: dict[str, Any] = {"dtype": str(dtype), "nfe": {}}

    def run(nfe: int) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            wave, _sr, _ = utils_infer.infer_process(
                ref_audio, REF_TEXT + " ", text, model, vocos, mel_spec_type="vocos", show_info=lambda *a: None,
                progress=None, nfe_step=nfe, cfg_strength=2.0, sway_sampling_coef=-1.0, speed=1.0,
                device=args.device,
            )
        return wave

    for nfe in args.stock_nfes:
        torch.manual_seed(SEED)
        times, wave = timed(lambda nfe=nfe: run(nfe), sync, args.warmup, args.repeats)
        st = stats(times)
        audio_s = len(wave) / 24000
        out["nfe"][nfe] = {**st, "audio_s": audio_s, "rtf": st["median"] / audio_s}
        say(f"stock nfe {nfe}: median {ms(st['median'])} ms, audio {audio_s:.2f} s")
        res.put("stock", out)
    model = vocos = None
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- daemon side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(work: Path, port: int, args: argparse.Namespace, comp: bool, graphs: bool) -> Path:
    cfg = work / "ishowttsd.toml"
    cfg.write_text(f"""
[daemon]
state_dir = "{work}/state"
runtime_dir = "{work}/run"
cache_dir = "{work}/cache"

[http]
listen = "127.0.0.1:{port}"

[admin]
socket = "{work}/run/admin.sock"
group = ""
admin_group = ""

[log]
level = "info"
file = "{work}/daemon.jsonl"

[clocks]
provider = "none"

[model]
architecture = "{args.arch}"
weights = "untrained"
device = "{args.device}"
precision = "{args.precision}"
compile = {str(comp).lower()}
cuda_graphs = {str(graphs).lower()}

[synthesis]
nfe = 7

[limits]
queue_size = 256
request_timeout_s = 300.0

[[voices]]
id = "default"
reference_text = "{REF_TEXT}"
""")
    return cfg


class DaemonProc:
    def __init__(self, cfg: Path, env: dict[str, str], log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.t0 = time.perf_counter()
        self.spawned_at = time.time()  # wall clock, to place the daemon's own log lines
        self.proc = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(cfg)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO))

    def wait_ready(self, url: str, timeout: float) -> float:
        import urllib.error
        import urllib.request

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"daemon not ready in {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def gpu_process_memory(pid: int) -> float | None:
    """The daemon's GPU memory as the driver reports it (CUDA context included), or None."""
    try:
        q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in q.stdout.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


def _wav_seconds(nbytes: int) -> float:
    """Seconds of audio in one of the daemon's WAV responses: a 44-byte header, then 16-bit mono
    samples at 24 kHz."""
    return (nbytes - 44) / 2 / 24000


def _wav_latencies(lat: list[float], audio_s: float) -> dict[str, Any]:
    return {**stats(lat), "audio_s": audio_s, "rtf": statistics.median(lat) / audio_s}


def _speech_body(text: str, *, stream: bool = False, fmt: str = "wav") -> dict[str, Any]:
    return {"input": text, "voice": "default", "response_format": fmt, "stream": stream, "nfe": 7, "seed": SEED}


async def _speech(session: Any, url: str, text: str, *, stream: bool = False, fmt: str = "wav",
                  request_id: str = "") -> tuple[float, float, int]:
    """One request: (total seconds, seconds to first audio byte, audio bytes)."""
    body = _speech_body(text, stream=stream, fmt=fmt)
    headers = {"X-Request-Id": request_id} if request_id else {}
    t0 = time.perf_counter()
    first = None
    n = 0
    async with session.post(url + "/v1/audio/speech", json=body, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")
        async for piece in r.content.iter_any():
            if piece and first is None:
                first = time.perf_counter() - t0
            n += len(piece)
    return time.perf_counter() - t0, first if first is not None else 0.0, n


async def http_bench(url: str, args: argparse.Namespace, text: str) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(args.warmup + 1):
            await _speech(session, url, text)
        lat, nbytes = [], 0
        for i in range(args.repeats):
            t, _, nbytes = await _speech(session, url, text, request_id=f"{WAV_ID}{i}")
            lat.append(t)
        audio_s = _wav_seconds(nbytes)
        out["wav"] = {**_wav_latencies(lat, audio_s), "latencies_s": lat}
        say(f"http wav: median {ms(out['wav']['median'])} ms for {audio_s:.2f} s")
        for _ in range(args.warmup):  # a stream's short first chunk is a length the WAV runs never had
            await _speech(session, url, text, stream=True, fmt="pcm")
        firsts = []
        for _ in range(args.repeats):
            _, f, _ = await _speech(session, url, text, stream=True, fmt="pcm")
            firsts.append(f)
        out["stream_first_audio"] = stats(firsts)
        say(f"http stream first audio: median {ms(out['stream_first_audio']['median'])} ms")
        out.update(_raw_client_bench(url, args, text, nbytes))
        out["throughput"] = {}
        for clients in args.clients:
            per = max(1, args.throughput_requests // clients)

            async def client(per: int = per) -> float:
                total = 0.0
                for _ in range(per):
                    _, _, n = await _speech(session, url, text)
                    total += _wav_seconds(n)
                return total

            t0 = time.perf_counter()
            audio = await asyncio.gather(*(client() for _ in range(clients)))
            wall = time.perf_counter() - t0
            out["throughput"][clients] = {"requests": per * clients, "audio_s": sum(audio), "wall_s": wall,
                                          "audio_s_per_s": sum(audio) / wall}
            say(f"throughput {clients} clients: {sum(audio) / wall:.1f} audio-s/s")
    return out


def _raw_client_bench(url: str, args: argparse.Namespace, text: str, wav_bytes: int) -> dict[str, Any]:
    """The WAV and the stream's first audio again, timed by a bare socket client (raw_http.py):
    the daemon and the loopback without aiohttp's client-side Python."""
    from raw_http import RawHttp

    client = RawHttp.for_url(url)
    path = "/v1/audio/speech"
    try:
        for _ in range(args.warmup):
            client.post_json(path, _speech_body(text))
            client.post_json(path, _speech_body(text, stream=True, fmt="pcm"))
        lat, firsts = [], []
        for _ in range(args.repeats):
            t, _, body = client.post_json(path, _speech_body(text))
            if len(body) != wav_bytes:  # the same seeded request: the same audio as aiohttp's
                raise RuntimeError(f"raw client got {len(body)} WAV bytes, aiohttp {wav_bytes}")
            lat.append(t)
        for _ in range(args.repeats):
            firsts.append(client.post_json(path, _speech_body(text, stream=True, fmt="pcm"))[1])
    finally:
        client.close()
    out = {"wav_raw_client": _wav_latencies(lat, _wav_seconds(wav_bytes)),
           "stream_first_audio_raw_client": stats(firsts)}
    say(f"raw client: wav median {ms(out['wav_raw_client']['median'])} ms, "
        f"stream first audio median {ms(out['stream_first_audio_raw_client']['median'])} ms")
    return out


WAV_ID = "bench-wav-"


def server_side(log: Path, latencies: list[float]) -> dict[str, float]:
    """Where the timed WAV requests' time went inside the daemon, from its own log lines.

    Each request's log line is matched to the client's latency by request id (``bench-wav-N``
    is the N-th timed request); what the client waited beyond the engine, the queue and the
    encoder is what HTTP and the hand-offs between the event loop and the worker cost.  Medians
    over the requests.
    """
    fields: dict[str, list[float]] = {"total_s": [], "queue_wait_s": [], "encode_s": [], "rest": []}
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        request_id = str(rec.get("request_id", ""))
        if rec.get("event") != "synthesis done" or not request_id.startswith(WAV_ID):
            continue
        index = int(request_id.removeprefix(WAV_ID))
        parts = {name: float(rec.get(name, 0.0)) for name in ("total_s", "queue_wait_s", "encode_s")}
        for name, value in parts.items():
            fields[name].append(value)
        fields["rest"].append(latencies[index] - sum(parts.values()))
    if not fields["total_s"]:
        return {}
    out = {f"engine_{k}" if k == "total_s" else k: statistics.median(v) for k, v in fields.items() if k != "rest"}
    out["http_and_handoffs_s"] = statistics.median(fields["rest"])
    out["requests"] = len(fields["total_s"])
    return out


# The daemon's start-up log lines that mark a phase boundary ("loading" carries its step).
_START_EVENTS = ("starting", "loading", "engine loaded", "fast path ready", "warm-up done", "ready")


def startup_timeline(log: Path, spawned_at: float) -> list[list[Any]]:
    """[seconds since spawn, what] for each start-up line the daemon logged, up to "ready".

    The gap before "starting" is Python and the daemon's own imports; from "starting" to the
    first "loading" the HTTP/admin servers and the engine's imports (torch, f5-tts: the loading
    thread imports them before it reports); then building the model, compile set-up, tracing
    and capture ("fast path ready") and the warm-up synthesis.
    """
    out: list[list[Any]] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            rec = json.loads(line)
            at = dt.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp() - spawned_at
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if at < 0 or rec.get("event") not in _START_EVENTS:
            continue
        what = rec.get("step") or rec["event"]
        if rec.get("event") == "fast path ready":
            what += f" ({rec.get('graphs')} graphs in {rec.get('s')} s)"
        out.append([round(at, 2), what])
        if rec.get("event") == "ready":
            break
    return out


def daemon_phase(args: argparse.Namespace, res: Results) -> dict[str, Any]:
    comp, graphs = VARIANTS[args.daemon_variant]
    work = Path(tempfile.mkdtemp(prefix="ishowttsd-bench-"))
    port = free_port()
    cfg = write_config(work, port, args, comp, graphs)
    url = f"http://127.0.0.1:{port}"
    cache = work / "compile-cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           # The daemon does not pass its cache_dir to the engine yet: point torch's caches at an
           # empty dir for the first start and reuse it for the second.
           "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton")}
    env.pop("NOTIFY_SOCKET", None)
    # An installed daemon runs from compiled bytecode (the .deb ships it, pip writes it).  The lent
    # GPU machines forbid writing it and their torch has none, so every start there compiled
    # every module from source (bench/NOTES.md item 25): let the first start write it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out: dict[str, Any] = {"variant": args.daemon_variant, "config": cfg.read_text()}
    text = TINY_TEXT if args.tiny else TEXT
    d = DaemonProc(cfg, env, work / "daemon.out")
    if not args.single_start:
        try:
            out["cold_start_empty_cache_s"] = d.wait_ready(url, args.ready_timeout)
            say(f"daemon READY (empty compile cache) in {out['cold_start_empty_cache_s']:.1f} s")
        finally:
            d.stop()
        out["cold_start_empty_cache_timeline"] = startup_timeline(work / "daemon.jsonl", d.spawned_at)
        say(f"start-up, empty cache: {out['cold_start_empty_cache_timeline']}")
        res.put("daemon", out)
        d = DaemonProc(cfg, env, work / "daemon.out")
    try:
        key = "cold_start_empty_cache_s" if args.single_start else "cold_start_warm_cache_s"
        out[key] = d.wait_ready(url, args.ready_timeout)
        say(f"daemon READY ({key}) in {out[key]:.1f} s")
        out[key.removesuffix("_s") + "_timeline"] = startup_timeline(work / "daemon.jsonl", d.spawned_at)
        say(f"start-up timeline: {out[key.removesuffix('_s') + '_timeline']}")
        res.put("daemon", out)
        out.update(asyncio.run(http_bench(url, args, text)))
        out["wav_server_side"] = server_side(work / "daemon.jsonl", out["wav"]["latencies_s"])
        say(f"http wav, inside the daemon (medians): {out['wav_server_side']}")
        out["process_gpu_mem_mib"] = gpu_process_memory(d.proc.pid)
        res.put("daemon", out)
        if args.self_check:
            t0 = time.perf_counter()
            sc = subprocess.run(
                [sys.executable, "-c", "import sys; from ishowttsd.admin.cli import main; sys.exit(main())",
                 "--socket", str(work / "run" / "admin.sock"), "--timeout", "600", "self-check", "--json"],
                capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
            out["self_check"] = {"exit_code": sc.returncode, "wall_s": time.perf_counter() - t0,
                                 "stderr_tail": sc.stderr[-2000:]}
            try:
                out["self_check"]["report"] = json.loads(sc.stdout)
            except ValueError:
                out["self_check"]["stdout_tail"] = sc.stdout[-4000:]
            say(f"self-check exit {sc.returncode}")
            res.put("daemon", out)
    finally:
        d.stop()
        if args.keep_logs:
            for name in ("daemon.out", "daemon.jsonl"):
                if (work / name).exists():
                    shutil.copy(work / name, args.out / name)
        shutil.rmtree(work, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- report


def table(data: dict[str, Any]) -> str:
    p = data["phases"]
    env = p.get("env", {})
    lines = [f"card: {env.get('gpu') or env.get('cpu')}; torch {env.get('torch')} (CUDA {env.get('cuda')}); "
             f"f5-tts {env.get('f5_tts')}; {env.get('arch')} untrained; precision {env.get('precision')}; "
             f"{env.get('date')}", ""]
    stock = p.get("stock", {}).get("nfe", {})
    eng = p.get("engine", {}).get("variants", {})
    daemon = p.get("daemon", {})
    s7 = stock.get(7) or stock.get("7")
    lines.append("| path (NFE 7) | median ms | min ms | p95 ms | audio s | RTF | stock/this | dist dB vs fp32 |")
    lines.append("|---|---|---|---|---|---|---|---|")

    def row(name: str, r: dict[str, Any], dist: Any = None) -> None:
        ratio = f"{s7['median'] / r['median']:.1f}x" if s7 else "-"
        d = f"{dist:.3f}" if isinstance(dist, float) else "-"
        lines.append(f"| {name} | {ms(r['median'])} | {ms(r['min'])} | {ms(r['p95'])} | {r['audio_s']:.2f} | "
                     f"{r['rtf']:.4f} | {ratio} | {d} |")

    if s7:
        row("stock infer_process", s7)
    for name, v in eng.items():
        r = v["nfe"].get(7) or v["nfe"].get("7")
        if r:
            row(f"engine {name}", r, r.get("distance_db_vs_fp32_eager"))
    if "wav" in daemon:
        row(f"HTTP e2e ({daemon.get('variant')})", daemon["wav"])
    if "wav_raw_client" in daemon:
        row(f"HTTP e2e ({daemon.get('variant')}), bare socket client", daemon["wav_raw_client"])
    lines.append("")
    for name, v in eng.items():
        sweep = {int(k): r for k, r in v["nfe"].items()}
        if len(sweep) > 1:
            lines.append(f"RTF by NFE, engine {name}: " + ", ".join(
                f"{k}: {r['rtf']:.4f} ({ms(r['median'])} ms)" for k, r in sorted(sweep.items(), reverse=True)))
        extra = [f"first audio {ms(v['stream_first_audio']['median'])} ms"] if "stream_first_audio" in v else []
        if "peak_gpu_mem_gib" in v:
            extra.append(f"peak GPU mem {v['peak_gpu_mem_gib']:.2f} GiB")
        extra.append(f"load {v['load_s']:.1f} s + warm-up {v['warm_up_s']:.1f} s")
        if "attention" in v:
            extra.append(f"attention {v['attention']}")
        lines.append(f"engine {name}: " + "; ".join(extra))
    if stock:
        lines.append("stock by NFE: " + ", ".join(f"{k}: {r['rtf']:.4f} ({ms(r['median'])} ms)"
                                                 for k, r in sorted(stock.items(), key=lambda kv: -int(kv[0]))))
    if daemon:
        side = daemon.get("wav_server_side")
        if side:
            lines.append(f"HTTP e2e inside the daemon (medians): engine {ms(side['engine_total_s'])} ms, "
                         f"queue {ms(side['queue_wait_s'])} ms, encode {ms(side['encode_s'])} ms, "
                         f"HTTP and hand-offs {ms(side['http_and_handoffs_s'])} ms")
        for key, client in (("stream_first_audio", "aiohttp"), ("stream_first_audio_raw_client", "bare socket")):
            if key in daemon:
                lines.append(f"HTTP stream first audio ({client} client): median {ms(daemon[key]['median'])} ms, "
                             f"p95 {ms(daemon[key]['p95'])} ms")
        for c, t in daemon.get("throughput", {}).items():
            lines.append(f"HTTP throughput {c} clients: {t['audio_s_per_s']:.1f} audio-s/s ({t['requests']} requests)")
        if daemon.get("process_gpu_mem_mib") is not None:
            lines.append(f"daemon process GPU memory (nvidia-smi, context included): "
                         f"{daemon['process_gpu_mem_mib']:.0f} MiB")
        for k in ("cold_start_empty_cache_s", "cold_start_warm_cache_s"):
            if k in daemon:
                steps = daemon.get(k.removesuffix("_s") + "_timeline") or []
                lines.append(f"{k}: {daemon[k]:.1f}" + (" (" + ", ".join(f"{at} {what}" for at, what in steps) + ")"
                                                         if steps else ""))
        if "self_check" in daemon:
            lines.append(f"self-check exit code {daemon['self_check']['exit_code']}")
    if data["errors"]:
        lines.append("errors: " + json.dumps(data["errors"])[:1500])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny untrained model (CI); numbers mean nothing")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--variants", default=None, help="comma list of " + ",".join(VARIANTS))
    p.add_argument("--sweep-variants", default="eager,compile+graphs", help="variants timed at every NFE")
    p.add_argument("--nfes", default="32,16,8,7,6")
    p.add_argument("--stock-nfes", default="7,32")
    p.add_argument("--clients", default="1,4,16,64")
    p.add_argument("--throughput-requests", type=int, default=64, help="requests per throughput level")
    p.add_argument("--daemon-variant", default=None)
    p.add_argument("--cache-dir", default=None, help="compile caches for the engine variants")
    p.add_argument("--skip", default="", help="comma list of phases to skip: stock, engine, daemon")
    p.add_argument("--self-check", action="store_true", help="run ishowtts-admin self-check on the bench daemon")
    p.add_argument("--ready-timeout", type=float, default=400.0)
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--single-start", action="store_true",
                   help="start the daemon once (empty compile cache) and measure on it; no warm restart")
    args = p.parse_args(argv)
    args.arch = "tiny" if args.tiny else "F5TTS_v1_Base"
    cuda = args.device.startswith("cuda")
    args.repeats = args.repeats or (3 if args.tiny else 10)
    args.variants = (args.variants or ("eager,compile+graphs" if cuda else "eager")).split(",")
    args.sweep_variants = args.sweep_variants.split(",")
    args.nfes = [int(x) for x in args.nfes.split(",")]
    args.stock_nfes = [int(x) for x in args.stock_nfes.split(",")]
    args.clients = [int(x) for x in args.clients.split(",")]
    args.daemon_variant = args.daemon_variant or ("compile+graphs" if cuda else "eager")
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    res = Results(args.out / "rtf.json")

    import torch

    from ishowttsd.engine.paths import f5_version

    env = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "f5_tts": f5_version(),
        "arch": args.arch,
        "precision": args.precision,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "text": TINY_TEXT if args.tiny else TEXT,
        "reference": "basic_ref_en.wav / " + REF_TEXT,
        "seed": SEED,
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    if cuda:
        env["driver_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    res.put("env", env)
    say(f"env: {env['gpu'] or env['cpu']}, torch {env['torch']}, f5-tts {env['f5_tts']}")
    for phase, fn in (("stock", stock_phase), ("engine", engine_phase)):
        if phase in skip:
            continue
        try:
            fn(args, res, torch)
        except Exception as exc:
            res.error(phase, exc)
    if "daemon" not in skip:
        try:
            daemon_phase(args, res)
        except Exception as exc:
            res.error("daemon", exc)
    report = table(res.data)
    (args.out / "table.md").write_text(report + "\n")
    print("\n" + report, flush=True)
    return 1 if res.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
