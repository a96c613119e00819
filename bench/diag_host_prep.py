#!/usr/bin/env python3
"""The host's time for each step that comes before a chunk's first GPU work (issue 8 diagnostics).

``diag_first_audio.py --timeline`` found the GPU idle for the first 0.74 ms of a stream's call
(H100 host, bench/NOTES.md item 50): 0.26 ms until the tokens are made, 0.49 ms more until the
chunk's launch begins.  This times the suspects one by one on CUDA (the tiny model: only the
host side matters), each call's host time with the device idle before it.

Usage on the device: python3 bench/diag_host_prep.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine import sampler, text
from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, VoiceSpec
from ishowttsd.engine.upstream import convert_char_to_pinyin, list_str_to_idx


def t(name: str, fn: Callable[[], object], n: int = 300) -> None:
    for _ in range(20):
        fn()
    xs = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    print(f"HOST {name:<40} median {statistics.median(xs)*1e6:8.1f} us  p90 {sorted(xs)[int(n*0.9)]*1e6:8.1f}")


def main() -> None:
    dev = torch.device("cuda")
    spec = ModelSpec(architecture="tiny", weights="untrained", device="cuda", compile=False, cuda_graphs=False)
    eng = Engine.load(spec, vocoder="untrained")
    voice = eng.prepare_voice(VoiceSpec(id="default"))
    ref = voice.reference.text
    said = ("Welcome back to the stream, everyone, thanks for the follows and the subs. "
            "Stay tuned, and tell your friends.")  # rtf.py's TEXT
    first = "Welcome back to the stream,"
    gen = torch.Generator(device=dev).manual_seed(1)

    t("normalize_text", lambda: text.normalize_text(said))
    t("chunk_text", lambda: text.chunk_text(said, 300, first_budget=60))
    t("torch.Generator(cuda).manual_seed", lambda: torch.Generator(device=dev).manual_seed(5))
    chars = convert_char_to_pinyin([ref + first])
    t("convert_char_to_pinyin", lambda: convert_char_to_pinyin([ref + first]))
    t("list_str_to_idx", lambda: list_str_to_idx(chars, eng.vocab))
    ids = list_str_to_idx(chars, eng.vocab)
    t("ids.pin_memory()", lambda: ids.pin_memory())
    p = ids.pin_memory()
    t("pinned.to(cuda, non_blocking)", lambda: p.to(dev, non_blocking=True))
    t("eng._tokens", lambda: eng._tokens(ref, first))
    t("initial_noise 716", lambda: sampler.initial_noise(716, 100, gen, dev))
    t("torch.cuda.Event + record", lambda: torch.cuda.Event(enable_timing=True).record())
    t("empty pinned 300k f32", lambda: torch.empty(300000, pin_memory=True))
    # The alternatives, beside what they would replace.
    t("ids.to(cuda) from pageable", lambda: ids.to(dev))
    t("existing generator.manual_seed", lambda: gen.manual_seed(5))
    t("convert_char_to_pinyin(first) alone", lambda: convert_char_to_pinyin([first]))
    ref_frames = voice.reference.frames
    ref_mel = eng._reference_mel(voice.reference, 0.1)

    def prep() -> None:  # what synthesis_steps does between the tokens' start and the launch
        g = torch.Generator(device=dev).manual_seed(5)
        ids = eng._tokens(ref, first)
        wanted = text.estimate_frames(ref_frames, ref, first, 1.0)
        frames = sampler.total_frames(wanted, ref_mel.shape[1], ids.shape[1])
        sampler.initial_noise(frames, 100, g, dev)

    t("the whole prep of a chunk", prep)
    with torch.inference_mode():
        t("the whole prep, inference_mode", prep)


if __name__ == "__main__":
    main()
