"""The F5-TTS engine: load a model once, keep it warm, turn requests into 24 kHz audio.

One ``Engine`` is owned by one worker thread (torch work is never shared between threads);
``load`` may run on another thread before that.  Nothing here downloads anything: weights,
vocab and vocoder are local paths, or built in-process with seeded random weights
("untrained", for tests and speed measurements: its audio is noise).
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ishowttsd.audio_format import PCM_SCALE

from . import accel, checkpoint, sampler, text
from .errors import Cancelled, EngineError, VoiceError
from .paths import default_vocab, f5_version
from .presets import HOP_LENGTH, N_FFT, N_MELS, WIN_LENGTH, get_preset
from .spec import MAX_NFE, MIN_NFE, SAMPLE_RATE, UNTRAINED, ModelSpec, SynthesisRequest, VoiceSpec
from .upstream import DiT, MelSpec, convert_char_to_pinyin
from .vocoder import FFT_FRAMES, Vocoder, VocoderLoadError, build_untrained, load_local
from .voices import PreparedVoice, Reference, ReferenceCache, ReferenceError

log = logging.getLogger("ishowttsd.engine")

__all__ = [
    "Cancelled",
    "Engine",
    "EngineError",
    "EngineInfo",
    "PreparedVoice",
    "Synthesis",
    "VoiceError",
]

# Peak below this (-80 dBFS) counts as silence: no real chunk of speech is that quiet.
_SILENT_PEAK = 1e-4
_WARMUP_TEXT = "Warming up the speech engine, one moment please."
_MEL_CACHE_SIZE = 64
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EngineInfo:
    architecture: str
    weights: str
    untrained: bool
    device: str
    precision: str
    gpu_name: str | None
    parameters: int  # DiT parameters (the vocoder's are in vocoder_parameters)
    torch_version: str
    cuda_version: str | None
    f5_tts_version: str
    vocoder: str = ""
    vocoder_parameters: int = 0
    vocab: str = ""
    vocab_size: int = 0
    # The fast ODE path in force (issue 8): bucketed + masked, torch.compile, CUDA graphs, and
    # its attention kernel ("" without the fast path: upstream's own attention).
    compiled: bool = False
    cuda_graphs: bool = False
    attention: str = ""
    qkv_epilogue: bool = False  # q/k rotated in the q/k/v GEMM's epilogue (engine/fused_gemm.py)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Synthesis:
    audio: np.ndarray  # float32 mono at sample_rate
    pcm: np.ndarray  # the same samples as 16-bit PCM (``audio_format.to_int16``'s rendering)
    sample_rate: int
    nfe: int
    chunks: int
    timings: dict[str, float]  # seconds: text_prep, ode, vocoder, total
    fp32_fallback: bool
    seed: int = 0  # the seed actually used (drawn at random when the request had none)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def _noop(_: str) -> None:
    return None


def _resolve_device(name: str) -> torch.device:
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__})")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise EngineError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise EngineError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    raise EngineError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")


def _resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 7:
            return "fp16"
        return "fp32"
    if name not in _DTYPES:
        raise EngineError(f"unknown precision {name!r} (use auto, fp16, bf16 or fp32)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EngineError(f"precision bf16 is not supported on {torch.cuda.get_device_name(device)}")
    return name


def _read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt as upstream's get_tokenizer("custom") reads it: one token per line, index = line."""
    try:
        with path.open(encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as exc:
        raise EngineError(f"vocab {path} cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise EngineError(f"vocab {path} is not UTF-8 text") from exc
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        vocab[line[:-1] if line.endswith("\n") else line] = i
    if not vocab:
        raise EngineError(f"vocab {path} is empty")
    return vocab


def _randomise_zero_init(dit: nn.Module) -> None:
    """Untrained mode: DiT zero-initialises its AdaLN and output layers (identity blocks, zero
    output), which would make every untrained step a no-op; give those layers small random
    weights so an untrained model does real, input-dependent work.  The text encoder's GRN
    layers start as identities too (zero gamma and beta); waking them makes their sequence norm,
    which the bucketed fast path must reproduce, matter in tests."""
    for module in dit.modules():
        if isinstance(module, nn.Linear) and not torch.any(module.weight):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.normal_(module.bias, std=0.02)
        elif type(module).__name__ == "GRN":
            gamma, beta = module.get_parameter("gamma"), module.get_parameter("beta")
            if not torch.any(gamma):
                nn.init.normal_(gamma, std=0.5)
                nn.init.normal_(beta, std=0.02)


class _StageClock:
    """Stage timings of one chunk without host syncs between the stages.

    On CUDA the marks are events on the stream, read after the chunk's audio has reached the
    host (which synchronises anyway): a sync after the ODE would leave the GPU idle while the
    host launches the vocoder, where without it those launches overlap the last steps.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Time between consecutive marks; call after the work has finished on the device."""
        pairs = zip(self.marks, self.marks[1:], strict=False)
        if self.cuda:
            return [start.elapsed_time(end) / 1e3 for start, end in pairs]
        return [end - start for start, end in pairs]


def _peak(wave: Tensor) -> Tensor:
    """The largest magnitude of ``wave`` as a 0-d tensor on its device; NaN if any sample is."""
    if wave.numel() == 0:  # the inf norm has no identity
        return wave.new_zeros(())
    return torch.linalg.vector_norm(wave, float("inf"))


def _pcm16(wave: Tensor) -> Tensor:
    """``audio_format.to_int16`` on the device: scaled by 32767, clipped (infinities to the
    ends), rounded half to even, NaN as silence.  Made beside the waveform it is a few
    microseconds; on the host, with the samples fresh from the GPU and not in the CPU's caches,
    it was most of a WAV response's encoding (bench/NOTES.md item 43)."""
    x = torch.nan_to_num(wave.float() * PCM_SCALE, nan=0.0, posinf=PCM_SCALE, neginf=-PCM_SCALE)
    return x.clamp_(-PCM_SCALE, PCM_SCALE).round_().to(torch.int16)


def _to_pinned(t: Tensor) -> Tensor:
    """Into page-locked host memory, asynchronously: a copy to pageable memory waits for the GPU."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


class _ChunkInput(NamedTuple):
    """What one chunk's solve starts from (kept for a redo in fp32)."""

    ids: Tensor  # token ids of reference transcript + chunk, on the device
    frames: int  # total frames, reference included
    noise: Tensor  # the initial noise drawn for it
    text_len: int  # characters of its text (logged; the text itself never is)


class _Pending(NamedTuple):
    """A chunk queued on the device (:meth:`Engine._launch`); :meth:`Engine._collect` waits."""

    chunk: _ChunkInput
    dit: nn.Module  # the model it ran on (half precision or the fp32 twin)
    samples: Tensor  # on the host (pinned, filled asynchronously on CUDA)
    pcm: Tensor  # the same as 16-bit PCM, beside them
    peak: Tensor  # the samples' largest magnitude (NaN if any is NaN), beside them on the host
    done: Any  # torch.cuda.Event recorded after the copy; None where the work is synchronous
    clock: _StageClock


class Engine:
    """A loaded, ready model.  Build it with :meth:`Engine.load`."""

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        *,
        dit: nn.Module,
        vocoder: Vocoder,
        vocab: dict[str, int],
        device: torch.device,
        precision: str,
        info: EngineInfo,
        dit_kwargs: dict[str, Any],
        fast: accel.FastSolver | None = None,
    ) -> None:
        self.dit = dit
        # Queue the next chunk before waiting for the last (:meth:`synthesis_steps`): only where
        # the device works asynchronously; on the CPU it would only delay every chunk's audio.
        self.overlap = device.type == "cuda"
        # The bucketed compiled/graphed solver for self.dit (None: eager sampler.sample).
        self.fast = fast
        self._dit_kwargs = dit_kwargs
        # Requests decode with the vocoder's network in the engine's precision (its inverse STFT
        # is fp32 either way); the fp32 one stays for the half-precision guard's redo.
        self._fp32_vocoder = vocoder
        self.vocoder = vocoder if precision == "fp32" else vocoder.at_precision(_DTYPES[precision])
        if fast is not None and fast.compiled:
            # Compiled with the DiT's regions, its length dynamic: one trace for every length,
            # where a re-trace per length had kept it eager (bench/NOTES.md item 7).
            self.vocoder = self.vocoder.compiled()
        self.vocab = vocab
        self.device = device
        self.precision = precision
        self.info = info
        self._fp32_dit: nn.Module | None = dit if precision == "fp32" else None
        self._references = ReferenceCache()
        self._mels: OrderedDict[tuple[str, float], Tensor] = OrderedDict()
        self._mel_spec = MelSpec(
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            n_mel_channels=N_MELS,
            target_sample_rate=SAMPLE_RATE,
            mel_spec_type="vocos",
        ).to(device)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        *,
        vocoder: str,
        progress: Callable[[str], None] = _noop,
        cache_dir: str | Path | None = None,
    ) -> Engine:
        """Build the DiT (checkpoint or seeded random), the vocoder and the mel front end.

        ``vocoder`` is a local Vocos dir or "untrained" (the caller resolves the default).
        ``cache_dir`` holds the compile caches (inductor, Triton) when ``spec.compile`` is on;
        without it they go where torch puts them by default (under /tmp).
        Raises EngineError with an operator-facing message.
        """
        try:
            preset = get_preset(spec.architecture)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        device = _resolve_device(spec.device)
        precision = _resolve_precision(spec.precision, device)
        vocab_path = Path(spec.vocab) if spec.vocab else default_vocab()
        vocab = _read_vocab(vocab_path)

        progress(f"building {spec.architecture} ({'untrained' if spec.untrained else 'from checkpoint'})")
        # Always build under a forked RNG: loading must not disturb the process's random state,
        # and untrained weights must be the same for the same seed, whatever ran before.  Built
        # on the target device: initialising 337 M parameters on the CPU took ~5 s of a restart
        # (bench/NOTES.md item 15), so untrained weights depend on the device's generator.
        rng_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        )
        with torch.random.fork_rng(devices=rng_devices), device:
            torch.manual_seed(spec.seed)
            dit_kwargs: dict[str, Any] = {**preset.dit, "text_num_embeds": len(vocab), "mel_dim": N_MELS}
            dit = DiT(**dit_kwargs)
            if spec.untrained:
                _randomise_zero_init(dit)
        if not spec.untrained:
            progress(f"loading checkpoint {spec.weights}")
            try:
                checkpoint.load_into(dit, Path(spec.weights), spec.architecture, len(vocab))
            except checkpoint.CheckpointError as exc:
                raise EngineError(str(exc)) from None

        progress(f"loading vocoder ({vocoder})")
        try:
            voc = build_untrained(preset.vocoder, spec.seed) if vocoder == UNTRAINED else load_local(Path(vocoder))
        except VocoderLoadError as exc:
            raise EngineError(str(exc)) from None

        progress(f"moving to {device} as {precision}")
        dtype = _DTYPES[precision]
        dit = dit.eval().requires_grad_(False).to(device=device, dtype=dtype)
        # Loaded in fp32, for the half-precision guard's redo; the engine makes a copy in its own
        # precision for requests (ISTFT in fp32 either way).
        voc = voc.eval().requires_grad_(False).to(device=device)
        fast: accel.FastSolver | None = None
        if (spec.compile or spec.cuda_graphs) and device.type != "cuda":
            log.info("model.compile / model.cuda_graphs are GPU-only; running eager", extra={"device": str(device)})
        elif spec.compile or spec.cuda_graphs:
            if spec.compile:
                caches = accel.configure_caches(cache_dir)
                progress("compiling the model (cached kernels are reused)")
                log.info("torch.compile on", extra={"caches": caches or "torch default"})
            try:
                fast = accel.FastSolver(
                    dit, device, compile=spec.compile, graphs=spec.cuda_graphs, attention=spec.attention
                )
            except ValueError as exc:  # a model variant the fast path does not handle
                raise EngineError(
                    f"{spec.architecture}: {exc}; set [model] compile = false and cuda_graphs = false"
                ) from None

        info = EngineInfo(
            architecture=spec.architecture,
            weights=spec.weights if not spec.untrained else UNTRAINED,
            untrained=spec.untrained,
            device=str(device),
            precision=precision,
            gpu_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            parameters=sum(p.numel() for p in dit.parameters()),
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            f5_tts_version=f5_version(),
            vocoder=vocoder,
            vocoder_parameters=sum(p.numel() for p in voc.parameters()),
            vocab=str(vocab_path),
            vocab_size=len(vocab),
            compiled=fast is not None and fast.compiled,
            cuda_graphs=fast is not None and fast.graphs_enabled,
            attention=fast.attention if fast is not None else "",
            qkv_epilogue=fast is not None and fast.weights.qkv_rope is not None,
        )
        log.info("engine loaded", extra={"engine": info.as_dict()})
        return cls(
            dit=dit,
            vocoder=voc,
            vocab=vocab,
            device=device,
            precision=precision,
            info=info,
            dit_kwargs=dit_kwargs,
            fast=fast,
        )

    # ------------------------------------------------------------------ voices

    @property
    def decode_count(self) -> int:
        """How many times reference audio was decoded from disk (voices are cached by content)."""
        return self._references.decode_count

    def prepare_voice(self, voice: VoiceSpec) -> PreparedVoice:
        """Decode, clean and mel-encode a voice's reference once; raises VoiceError."""
        try:
            reference = self._references.get(voice.reference_audio, voice.reference_text)
        except ReferenceError as exc:
            raise VoiceError(f"voice {voice.id!r}: {exc}") from None
        prepared = PreparedVoice(spec=voice, reference=reference)
        self._reference_mel(reference, SynthesisRequest.target_rms)
        return prepared

    @torch.inference_mode()
    def _reference_mel(self, ref: Reference, target_rms: float) -> Tensor:
        """(1, frames + 1, mel) fp32 mel of the RMS-normalised reference, cached per target."""
        key = (ref.key, float(target_rms))
        mel = self._mels.get(key)
        if mel is not None:
            self._mels.move_to_end(key)
            return mel
        audio = torch.from_numpy(ref.audio).to(self.device).unsqueeze(0)
        # Upstream raises quiet references to target_rms (and scales the output back down).
        if ref.rms < target_rms:
            audio = audio * (target_rms / ref.rms)
        mel = self._mel_spec(audio).permute(0, 2, 1).contiguous().float()
        self._mels[key] = mel
        while len(self._mels) > _MEL_CACHE_SIZE:
            self._mels.popitem(last=False)
        return mel

    # ------------------------------------------------------------------ synthesis

    def _tokens(self, ref_text: str, gen_text: str) -> Tensor:
        """(1, n) token ids, as upstream's ``list_str_to_idx`` makes them for one text.

        Made as one tensor straight from the list, not through upstream's pad_sequence and a
        pinned copy: this runs before the GPU has any of a request's work, and each torch call
        on that path costs ten times its warm-loop time there (cold caches; bench/NOTES.md
        item 51).
        """
        chars = convert_char_to_pinyin([ref_text + gen_text])[0]
        ids = [[self.vocab.get(c, 0) for c in chars]]
        if self.device.type == "cuda":  # from pageable memory, a copy would wait for the GPU
            return torch.tensor(ids, dtype=torch.long, pin_memory=True).to(self.device, non_blocking=True)
        return torch.tensor(ids, dtype=torch.long)

    def _fp32_model(self) -> nn.Module:
        """An fp32 twin of the DiT, built on first need (the weights are the half-precision
        ones widened back: what fp32 fixes is overflow in activations, not weight rounding).

        Rebuilt from the constructor arguments rather than ``copy.deepcopy``: a DiT that ever
        ran through upstream's ``CFM.sample`` holds a ``threading.local`` cache, which cannot
        be copied (seen on the H100).
        """
        if self._fp32_dit is None:
            log.warning("building an fp32 copy of the model for the half-precision fallback")
            with torch.random.fork_rng(devices=[]), torch.device(self.device):
                twin = DiT(**self._dit_kwargs)
            twin.load_state_dict({k: v.float() for k, v in self.dit.state_dict().items()})
            self._fp32_dit = twin.eval().requires_grad_(False)
        return self._fp32_dit

    def _launch(
        self,
        dit: nn.Module,
        ref: Reference,
        ref_mel: Tensor,
        chunk: _ChunkInput,
        req: SynthesisRequest,
    ) -> _Pending:
        """Queue one chunk's work (ODE solve, vocoder, copy of the samples to the host) without
        waiting for it: on CUDA the host returns while the GPU still runs, so it can queue
        more work (the next chunk, another request's) before :meth:`_collect` waits."""
        clock = _StageClock(self.device)
        clock.mark()
        if self.fast is not None and dit is self.fast.dit:
            mel = self.fast.sample(
                ref_mel, chunk.ids, chunk.frames, nfe=req.nfe, cfg_strength=req.cfg_strength, sway=req.sway,
                noise=chunk.noise,
            )
        else:
            mel = sampler.sample(
                dit, ref_mel, chunk.ids, chunk.frames, nfe=req.nfe, cfg_strength=req.cfg_strength, sway=req.sway,
                noise=chunk.noise,
            )
        clock.mark()
        decode = self.vocoder if dit is self.dit else self._fp32_vocoder
        with sampler.exact_length_convs(self.device):
            wave = decode(mel[:, ref.frames :, :].permute(0, 2, 1))[0]
        if ref.rms < req.target_rms:
            wave = wave * (ref.rms / req.target_rms)
        clock.mark()
        # The guard's one number, reduced where the samples are: on the host the check took
        # two passes and two temporaries over the whole waveform, inside every request's time.
        peak = _peak(wave)
        pcm = _pcm16(wave)
        if self.device.type != "cuda":
            return _Pending(chunk, dit, wave, pcm, peak, None, clock)
        done = torch.cuda.Event()
        pending = _Pending(chunk, dit, _to_pinned(wave), _to_pinned(pcm), _to_pinned(peak), done, clock)
        done.record()  # after the copies were queued: collecting waits for all three
        return pending

    @staticmethod
    def _collect(pending: _Pending, timings: dict[str, float]) -> text.Piece:
        """Wait for a launched chunk; its samples, and its stage times added to ``timings``."""
        if pending.done is not None:
            pending.done.synchronize()
        ode, vocoder = pending.clock.seconds()
        timings["ode"] += ode
        timings["vocoder"] += vocoder
        # The arrays keep the (pinned) tensors alive: no copy.
        return text.Piece(pending.samples.numpy().astype(np.float32, copy=False), pending.pcm.numpy())

    @torch.inference_mode()
    def _warm_vocoder(self, ref: Reference) -> None:
        """Run the vocoder once at every length step up to the longest chunk this reference
        allows.  A length the vocoder has not run at before needs a cuFFT plan (one per
        :data:`vocoder.FFT_FRAMES` frames) and may need new cuBLAS kernels: on the H100 a first
        long request paid 17-31 ms more for them (bench/NOTES.md item 32)."""
        longest = text.fixed_frames(accel.WARM_SECONDS) - ref.frames
        with sampler.exact_length_convs(self.device):
            for frames in range(FFT_FRAMES, longest + FFT_FRAMES, FFT_FRAMES):
                self.vocoder(torch.zeros(1, N_MELS, frames, device=self.device))

    @staticmethod
    def _bad_peak(count: int, peak: float) -> bool:
        """Whether ``count`` samples whose largest magnitude is ``peak`` are broken output:
        none, silent, or not finite (a NaN peak fails both comparisons)."""
        return count == 0 or not _SILENT_PEAK <= peak < math.inf

    @classmethod
    def _bad(cls, samples: np.ndarray) -> bool:
        if len(samples) == 0:
            return True
        # max/min propagate NaN and need no temporaries, unlike abs().
        return cls._bad_peak(len(samples), max(float(samples.max()), -float(samples.min())))

    def synthesize(
        self,
        voice: PreparedVoice,
        req: SynthesisRequest,
        *,
        on_chunk: Callable[[text.Piece], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        first_chunk_bytes: int | None = None,
    ) -> Synthesis:
        """Speak ``req.text`` in ``voice``, start to end (:meth:`synthesis_steps`, run through)."""
        steps = self.synthesis_steps(
            voice, req, on_chunk=on_chunk, should_stop=should_stop, first_chunk_bytes=first_chunk_bytes
        )
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: Synthesis = done.value
                return result

    @torch.inference_mode()
    def synthesis_steps(
        self,
        voice: PreparedVoice,
        req: SynthesisRequest,
        *,
        on_chunk: Callable[[text.Piece], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        first_chunk_bytes: int | None = None,
    ) -> Generator[None, None, Synthesis]:
        """Speak ``req.text`` in ``voice``, one step at a time; the generator returns the result.

        Long text is split into chunks (sentences, then clauses) sized to the reference; each
        chunk's settled samples go to ``on_chunk`` as soon as they exist (the cross-fade tail is
        held back for the next chunk), and the concatenation of everything passed to
        ``on_chunk`` equals ``Synthesis.audio``.  ``should_stop`` is polled before each chunk
        (raises Cancelled).  ``first_chunk_bytes`` caps the first chunk, for a faster first audio.

        Where the device runs asynchronously (``overlap``: CUDA), the next chunk is queued
        before the last one is waited for, and the generator yields just before each wait: the
        caller may queue other work then (the worker queues the next request), so the GPU never
        idles while the host hands audio over.  The exception is a listener's (``on_chunk``)
        first chunk: it is waited for before the second is queued, so that queueing never
        delays the first audio.  Elsewhere it never yields.

        fp16/bf16 guard: a chunk that comes out non-finite or silent is redone in fp32, and the
        chunks queued after that are made in fp32 (chunks already streamed cannot be taken back).
        """
        t_start = time.perf_counter()
        if not MIN_NFE <= req.nfe <= MAX_NFE:
            raise ValueError(f"nfe must be in [{MIN_NFE}, {MAX_NFE}], got {req.nfe}")
        if req.speed <= 0:
            raise ValueError(f"speed must be positive, got {req.speed}")
        gen = text.normalize_text(req.text)
        if not gen:
            raise ValueError("text is empty after normalisation")
        ref = voice.reference
        ref_mel = self._reference_mel(ref, req.target_rms)
        budget = text.chunk_budget(ref.text, ref.seconds, req.speed)
        chunks = text.chunk_text(gen, budget, first_budget=first_chunk_bytes)
        durations = text.chunk_durations(req.fix_duration, ref.frames, chunks, req.cross_fade_s)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        timings = {"text_prep": time.perf_counter() - t_start, "ode": 0.0, "vocoder": 0.0}

        fader = text.CrossFader(int(req.cross_fade_s * SAMPLE_RATE) if req.cross_fade_s > 0 else 0, on_chunk)
        dit = self.dit
        fell_back = False
        queued: deque[_Pending] = deque()

        def settle(pending: _Pending) -> None:
            nonlocal dit, fell_back
            samples = self._collect(pending, timings)
            if pending.dit is not self._fp32_dit and self._bad_peak(len(samples), float(pending.peak)):
                log.warning(
                    "half-precision output was non-finite or silent; redoing in fp32",
                    extra={"precision": self.precision, "text_len": pending.chunk.text_len, "nfe": req.nfe},
                )
                dit = self._fp32_model()
                fell_back = True
                samples = self._collect(self._launch(dit, ref, ref_mel, pending.chunk, req), timings)
            fader.push(samples)

        for chunk, duration in zip(chunks, durations, strict=True):
            if should_stop():
                raise Cancelled("synthesis cancelled")
            t_prep = time.perf_counter()
            ids = self._tokens(ref.text, chunk)
            wanted = (
                text.fixed_frames(duration)
                if duration is not None
                else text.estimate_frames(ref.frames, ref.text, chunk, req.speed)
            )
            frames = sampler.total_frames(wanted, ref_mel.shape[1], ids.shape[1])
            noise = sampler.initial_noise(frames, N_MELS, generator, self.device)
            timings["text_prep"] += time.perf_counter() - t_prep
            queued.append(self._launch(dit, ref, ref_mel, _ChunkInput(ids, frames, noise, len(chunk)), req))
            # A listener's first audio is handed over before the next chunk is queued, so it never
            # waits for the host to queue one: 3-4 ms of host on the H200's machines, hidden behind
            # a first chunk's 13 ms of GPU there, but not on a host several times slower than its
            # GPU (bench/NOTES.md item 51).
            ahead = 1 if self.overlap and (on_chunk is None or fader.started) else 0
            if len(queued) > ahead:
                if self.overlap:
                    yield
                settle(queued.popleft())
        while queued:
            if self.overlap:
                yield
            settle(queued.popleft())
        whole = fader.finish()
        timings["total"] = time.perf_counter() - t_start
        return Synthesis(
            audio=whole.audio,
            pcm=whole.pcm,
            sample_rate=SAMPLE_RATE,
            nfe=req.nfe,
            chunks=len(chunks),
            timings=timings,
            fp32_fallback=fell_back,
            seed=seed,
        )

    # ------------------------------------------------------------------ warm-up

    def warm_up(
        self,
        voice: PreparedVoice,
        nfe_values: Iterable[int],
        cfg_strengths: Iterable[float] = (SynthesisRequest.cfg_strength,),
    ) -> None:
        """Run every NFE requests will use once, and check the audio is finite and not silent.

        If half precision needed the fp32 fallback here, this GPU's fp16/bf16 output is broken:
        the engine switches to fp32 for good (and says so) rather than pay twice per request.

        With the fast path on, every length bucket a default-speed request on this voice can
        hit is compiled and captured first, so no request pays for it, for each guidance mode
        among ``cfg_strengths`` (guided, or unguided at 0: their shapes differ).
        """
        # One strength per guidance mode (the largest): the shapes depend on the mode only.
        strengths = {sampler.is_guided(c): c for c in sorted(set(cfg_strengths))}
        if self.fast is not None:
            t0 = time.perf_counter()
            try:
                frames = self.fast.warm_frames(voice.reference.frames + 1)
                captured = sum(self.fast.precapture(frames, guided=guided) for guided in sorted(strengths))
            except Exception as exc:
                raise EngineError(f"compiling/capturing the model failed: {type(exc).__name__}: {exc}") from exc
            log.info(
                "fast path ready",
                extra={
                    "graphs": captured,
                    "pdl": self.fast.pdl,
                    "compiled": self.fast.compiled,
                    "attention": self.fast.attention,
                    "qkv_epilogue": self.fast.weights.qkv_rope is not None,
                    "s": round(time.perf_counter() - t0, 2),
                },
            )
        if self.device.type == "cuda":  # cuFFT's and cuBLAS's set-up; the CPU has none to speak of
            self._warm_vocoder(voice.reference)
        for nfe, cfg in itertools.product(sorted(set(nfe_values)), strengths.values()):
            req = SynthesisRequest(text=_WARMUP_TEXT, voice_id=voice.id, nfe=nfe, cfg_strength=cfg, seed=0)
            try:
                result = self.synthesize(voice, req)
            except (Cancelled, VoiceError):
                raise
            except Exception as exc:
                raise EngineError(f"warm-up at nfe={nfe} failed: {type(exc).__name__}: {exc}") from exc
            if self._bad(result.audio):
                what = "non-finite" if not np.all(np.isfinite(result.audio)) else "silent"
                raise EngineError(
                    f"warm-up at nfe={nfe} produced {what} audio on {self.info.device} ({self.info.precision}); "
                    "the model or vocoder is broken"
                )
            if result.fp32_fallback and self.precision != "fp32":
                log.warning(
                    "half-precision output is broken on this device; switching to fp32",
                    extra={"precision": self.precision, "device": self.info.device},
                )
                self.dit = self._fp32_model()
                self.vocoder = self._fp32_vocoder
                self.precision = "fp32"
                self.fast = None  # its graphs hold the half-precision model
                self.info = replace(
                    self.info, precision="fp32", compiled=False, cuda_graphs=False, attention="", qkv_epilogue=False
                )
            log.info(
                "warm-up done",
                extra={
                    "nfe": nfe,
                    "cfg_strength": cfg,
                    "rtf": round(result.timings["total"] / max(result.duration_s, 1e-9), 4),
                },
            )
