#!/usr/bin/env python3
"""Why is the first request of a new text length slow?  Times the first and second synthesis
of texts of new lengths, split by stage, with cuDNN on and off (eager fp16, full size)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch

from ishowttsd.engine.f5 import Engine
from ishowttsd.engine.spec import ModelSpec, SynthesisRequest, VoiceSpec

eng = Engine.load(ModelSpec(architecture="F5TTS_v1_Base", weights="untrained", device="cuda"), vocoder="untrained")
voice = eng.prepare_voice(VoiceSpec(id="default"))
eng.warm_up(voice, [7])
words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen"]
for cudnn in (True, False):
    torch.backends.cudnn.enabled = cudnn
    for k in range(3):
        text = " ".join(words[: 4 + 3 * k + (0 if cudnn else 1)]) + "."
        for attempt in (1, 2):
            s = eng.synthesize(voice, SynthesisRequest(text=text, voice_id="default", nfe=7, seed=1))
            t = {key: round(v * 1e3, 1) for key, v in s.timings.items()}
            print(f"DIAG cudnn={cudnn} len={len(text)} call {attempt}: {t}", flush=True)
