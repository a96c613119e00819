"""The listening page: blind A/B pairs of a candidate and a reference NFE, rated in a browser.

:func:`write_listening_page` writes one self-contained ``index.html`` (inline CSS and JS, no
network) beside the WAVs and spectrogram PNGs it links to by relative path.  The rater
listens, rates each clip with the seed's template (naturalness, clarity, prosody 1-5,
artifacts yes/no, notes), reveals which clip was which only afterwards, and downloads
``ratings.json`` in the schema :func:`ishowttsd.quality.summarise_ratings` reads.  The page
also shows what the rules say as the ratings come in; the authoritative verdict is
``ishowtts-admin quality-verdict ratings.json``.

:func:`build_samples` is the whole ``quality-samples`` job: synthesise every pair through
:func:`ishowttsd.quality.compare_nfe`, write the WAVs and spectrograms, then the page.
"""

from __future__ import annotations

import html
import json
import random
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ishowttsd.quality import (
    CRITERIA,
    MAX_DROP,
    MIN_NATURALNESS,
    RATINGS_SCHEMA,
    UNTRAINED_NOTE,
    Progress,
    SynthesizeAudio,
    compare_nfe,
)

PAIR_KEYS = ("category", "text", "candidate_wav", "reference_wav")


def _item(index: int, pair: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    missing = [k for k in PAIR_KEYS if not pair.get(k)]
    if missing:
        raise ValueError(f"pair {index}: missing {', '.join(missing)}")
    sides = {
        side: {"wav": str(pair[f"{side}_wav"]), "spectrogram": pair.get(f"{side}_spectrogram"), "is": side}
        for side in ("candidate", "reference")
    }
    # The blind order: which clip plays as A is a coin toss per pair.
    first, second = ("candidate", "reference") if rng.random() < 0.5 else ("reference", "candidate")
    distance = pair.get("distance", pair.get("distance_db"))
    return {
        "id": str(pair.get("id") or f"{pair['category']}-{index}"),
        "category": str(pair["category"]),
        "text": str(pair["text"]),
        "distance_db": None if distance is None else float(distance),
        "A": sides[first],
        "B": sides[second],
    }


def write_listening_page(
    out_dir: Path,
    pairs: Sequence[Mapping[str, Any]],
    *,
    candidate_nfe: int,
    reference_nfe: int,
    untrained: bool,
    seed: int,
    rng: random.Random | None = None,
) -> Path:
    """Write ``out_dir/index.html`` for ``pairs`` (paths in them are relative to ``out_dir``).

    Each pair: ``category``, ``text``, ``candidate_wav``, ``reference_wav``, optionally
    ``candidate_spectrogram``, ``reference_spectrogram``, ``distance`` (dB) and ``id``.
    ``rng`` fixes the blind A/B order (tests); by default it is random per page.
    """
    rng = rng or random.Random()
    data = {
        "schema": RATINGS_SCHEMA,
        "candidate_nfe": candidate_nfe,
        "reference_nfe": reference_nfe,
        "seed": seed,
        "untrained": untrained,
        "untrained_note": UNTRAINED_NOTE,
        "criteria": list(CRITERIA),
        "max_drop": MAX_DROP,
        "min_naturalness": MIN_NATURALNESS,
        "items": [_item(i, p, rng) for i, p in enumerate(pairs, start=1)],
    }
    # "<" escaped so that no text can close the <script> element that carries the data.
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    title = f"NFE {candidate_nfe} against NFE {reference_nfe}: listening test"
    page = (
        _TEMPLATE.replace("@@TITLE@@", html.escape(title))
        .replace("@@RULES@@", html.escape(_rules_text()))
        .replace("@@DATA@@", payload)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def _rules_text() -> str:
    return (
        f"ACCEPT when there are no obvious artifacts in the candidate, the subjective drop "
        f"(mean of naturalness, clarity and prosody, candidate against reference) is under "
        f"{MAX_DROP:.0%}, and the candidate's naturalness is at least {MIN_NATURALNESS:g}/5. "
        f"Otherwise REJECT."
    )


def write_pair_files(out_dir: Path, stem: str, candidate: np.ndarray, reference: np.ndarray,
                     sample_rate: int) -> dict[str, str]:
    """Write one pair's WAVs and spectrograms under blind names; return the page's file fields."""
    import soundfile as sf

    from ishowttsd.plots import spectrogram_png

    files: dict[str, str] = {}
    for side, audio in (("candidate", candidate), ("reference", reference)):
        # A random name: the file name must not tell the rater which clip is which.
        name = f"{stem}-{secrets.token_hex(3)}"
        sf.write(out_dir / f"{name}.wav", np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16")
        # Spectrograms carry no NFE in their title: the page must stay blind.
        spectrogram_png(audio, sample_rate, out_dir / f"{name}.png")
        files[f"{side}_wav"], files[f"{side}_spectrogram"] = f"{name}.wav", f"{name}.png"
    return files


def build_samples(
    out_dir: Path,
    synthesize_audio: SynthesizeAudio,
    *,
    texts: Mapping[str, Sequence[str]] | None = None,
    voice_id: str,
    candidate_nfe: int,
    reference_nfe: int,
    seed: int,
    sample_rate: int,
    untrained: bool,
    progress: Progress | None = None,
    request_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Synthesise, write WAVs + spectrograms + index.html into ``out_dir``; return the comparison.

    The returned dict is :func:`compare_nfe`'s result with the file names in each entry and
    ``page`` (the index.html path).
    """
    out_dir.mkdir(parents=True, exist_ok=True)

    def write_pair(entry: dict[str, Any], candidate: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
        return write_pair_files(out_dir, entry["id"], candidate, reference, sample_rate)

    result = compare_nfe(
        synthesize_audio, texts=texts, voice_id=voice_id, candidate_nfe=candidate_nfe,
        reference_nfe=reference_nfe, seed=seed, sample_rate=sample_rate, untrained=untrained,
        progress=progress, request_fields=request_fields, on_pair=write_pair,
    )
    pairs = [{**e, "distance": e["distance_db"]} for e in result["texts"]]
    page = write_listening_page(
        out_dir, pairs, candidate_nfe=candidate_nfe, reference_nfe=reference_nfe, untrained=untrained, seed=seed
    )
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return {**result, "page": str(page)}


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
  :root { --fg:#1d2330; --muted:#5b6474; --line:#d8dde6; --bg:#f6f7f9; --card:#fff; --accent:#2f5fd0;
          --ok:#18794e; --bad:#b42318; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color:var(--fg); background:var(--bg); }
  header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
  header { padding-top: 20px; }
  h1 { font-size: 1.45rem; margin: 0 0 6px; }
  .muted { color: var(--muted); }
  .banner { background:#fff4e5; border:1px solid #f0b45a; padding:10px 14px; border-radius:8px; margin:12px 0; }
  .rules { background:#eef3ff; border:1px solid #bcd0fb; padding:10px 14px; border-radius:8px; margin:12px 0; }
  .item { background:var(--card); border:1px solid var(--line); border-radius:10px;
          padding:14px 16px; margin:16px 0; }
  .item h2 { font-size:1rem; margin:0 0 4px; display:flex; gap:10px; align-items:center; }
  .cat { font-size:.75rem; text-transform:uppercase; letter-spacing:.04em; background:#e7ebf3;
         border-radius:4px; padding:2px 6px; }
  .text { font-size:1.05rem; margin:6px 0 10px; }
  .sides { display:grid; grid-template-columns: 1fr 1fr; gap:14px; }
  .side { border:1px solid var(--line); border-radius:8px; padding:10px; }
  .side h3 { margin:0 0 6px; font-size:1rem; }
  .side audio { width:100%; }
  .side img { width:100%; border-radius:4px; margin:6px 0; background:#000; }
  .field { display:flex; align-items:center; gap:8px; margin:3px 0; flex-wrap:wrap; }
  .field > span:first-child { width:110px; color:var(--muted); }
  .field label { cursor:pointer; }
  .field input[type=text] { flex:1; min-width:120px; padding:3px 6px; }
  .meta { display:flex; gap:16px; align-items:center; margin-top:8px; flex-wrap:wrap; }
  .reveal { color:var(--accent); }
  button { font:inherit; padding:6px 12px; border-radius:6px; border:1px solid var(--accent);
           background:#fff; color:var(--accent); cursor:pointer; }
  button.primary { background:var(--accent); color:#fff; }
  #overall { background:var(--card); border:2px solid var(--accent); border-radius:10px;
             padding:14px 16px; margin:22px 0; }
  #overall table { border-collapse:collapse; margin:8px 0; }
  #overall td, #overall th { padding:3px 12px 3px 0; text-align:left; }
  .ACCEPT { color:var(--ok); font-weight:700; }
  .REJECT { color:var(--bad); font-weight:700; }
  textarea { width:100%; min-height:50px; font:inherit; }
  @media (max-width: 760px) { .sides { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>@@TITLE@@</h1>
  <p class="muted">Each pair is the same text, voice and seed at two step counts. Listen to A and B,
  rate each one, and only then press <em>Reveal</em>. Which clip is A was decided at random per pair.
  Your ratings stay in this browser until you download them.</p>
  <div id="untrained" class="banner" hidden></div>
  <div class="rules"><strong>Rules.</strong> @@RULES@@</div>
</header>
<main id="items"></main>
<footer>
  <section id="overall">
    <h2 style="margin-top:0">Overall</h2>
    <div id="summary"></div>
    <div class="field"><span>Your decision</span>
      <label><input type="radio" name="overall-decision" value="accept"> accept</label>
      <label><input type="radio" name="overall-decision" value="reject"> reject</label>
    </div>
    <div class="field"><span>Rater</span><input type="text" id="rater" placeholder="name (optional)"></div>
    <textarea id="overall-notes" placeholder="overall notes"></textarea>
    <p><button class="primary" id="download">Download ratings (JSON)</button>
       <span class="muted">then run <code>ishowtts-admin quality-verdict ratings.json</code></span></p>
  </section>
</footer>
<script type="application/json" id="data">@@DATA@@</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const STORE = "ishowtts-ratings:" + DATA.candidate_nfe + "-" + DATA.reference_nfe + "-" + DATA.seed;
const SLOTS = ["A", "B"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function radios(name, values, labels) {
  return values.map((v, i) =>
    el("label", {}, el("input", {type: "radio", name: name, value: String(v)}), " " + labels[i]));
}

function sideBox(item, slot) {
  const s = item[slot], key = item.id + "-" + slot;
  const box = el("div", {class: "side", "data-slot": slot},
    el("h3", {text: "Clip " + slot}),
    el("audio", {controls: "", preload: "auto", src: s.wav, "data-testid": "audio-" + key}));
  if (s.spectrogram) box.append(el("img", {src: s.spectrogram, alt: "spectrogram of clip " + slot}));
  for (const c of DATA.criteria) {
    const scores = radios(key + "-" + c, [1, 2, 3, 4, 5], ["1", "2", "3", "4", "5"]);
    box.append(el("div", {class: "field"}, el("span", {text: c}), ...scores));
  }
  const yesno = radios(key + "-artifacts", ["yes", "no"], ["yes", "no"]);
  box.append(el("div", {class: "field"}, el("span", {text: "artifacts"}), ...yesno));
  const notes = el("input", {type: "text", name: key + "-notes"});
  box.append(el("div", {class: "field"}, el("span", {text: "notes"}), notes));
  return box;
}

function render() {
  const main = document.getElementById("items");
  for (const item of DATA.items) {
    const reveal = el("span", {class: "reveal", hidden: "", "data-testid": "reveal-" + item.id});
    const name = s => item[s].is === "candidate"
      ? DATA.candidate_nfe + " (candidate)" : DATA.reference_nfe + " (reference)";
    reveal.textContent = SLOTS.map(s => s + " = NFE " + name(s)).join(", ");
    const button = el("button", {type: "button", text: "Reveal"});
    button.addEventListener("click", () => {
      reveal.hidden = !reveal.hidden;
      button.textContent = reveal.hidden ? "Reveal" : "Hide";
    });
    const distance = item.distance_db === null ? "n/a" : item.distance_db.toFixed(2) + " dB";
    main.append(el("section", {class: "item", id: "item-" + item.id},
      el("h2", {}, el("span", {class: "cat", text: item.category}), el("span", {text: item.id})),
      el("div", {class: "text", text: item.text}),
      el("div", {class: "sides"}, sideBox(item, "A"), sideBox(item, "B")),
      el("div", {class: "meta"},
        el("span", {text: "objective distance (mel-cepstral, A to B): " + distance}), button, reveal)));
  }
  if (DATA.untrained) {
    const banner = document.getElementById("untrained");
    banner.hidden = false;
    const note = DATA.untrained_note.charAt(0).toUpperCase() + DATA.untrained_note.slice(1);
    banner.textContent = note + ". Rate these clips only to try the page out.";
  }
}

function checked(name) {
  const node = document.querySelector('input[name="' + CSS.escape(name) + '"]:checked');
  return node ? node.value : null;
}

function collect() {
  const items = DATA.items.map(item => {
    const out = {id: item.id, category: item.category, text: item.text, distance_db: item.distance_db,
                 order: {A: item.A.is, B: item.B.is}};
    for (const slot of SLOTS) {
      const key = item.id + "-" + slot, side = {};
      for (const c of DATA.criteria) { const v = checked(key + "-" + c); side[c] = v === null ? null : Number(v); }
      const a = checked(key + "-artifacts");
      side.artifacts = a === null ? null : a === "yes";
      side.notes = document.querySelector('input[name="' + CSS.escape(key + "-notes") + '"]').value;
      out[item[slot].is] = side;
    }
    return out;
  });
  return {
    schema: DATA.schema, candidate_nfe: DATA.candidate_nfe, reference_nfe: DATA.reference_nfe,
    seed: DATA.seed, untrained: DATA.untrained, created: new Date().toISOString(),
    rater: document.getElementById("rater").value, items: items,
    overall: {decision: checked("overall-decision"), notes: document.getElementById("overall-notes").value},
  };
}

// The same rules as ishowttsd.quality.summarise_ratings, for live feedback only.
function judge(r) {
  const full = s => DATA.criteria.every(c => s[c] !== null) && s.artifacts !== null;
  const rated = r.items.filter(i => full(i.candidate) && full(i.reference));
  const mean = (side, c) => rated.reduce((t, i) => t + i[side][c], 0) / rated.length;
  const reasons = [];
  const res = {rated: rated.length, total: r.items.length, reasons: reasons, cand: {}, ref: {}};
  if (!rated.length) { reasons.push("no pair is fully rated"); return res; }
  for (const c of DATA.criteria) { res.cand[c] = mean("candidate", c); res.ref[c] = mean("reference", c); }
  const avg = o => DATA.criteria.reduce((t, c) => t + o[c], 0) / DATA.criteria.length;
  res.cand.overall = avg(res.cand); res.ref.overall = avg(res.ref);
  res.drop = (res.ref.overall - res.cand.overall) / res.ref.overall;
  const art = rated.filter(i => i.candidate.artifacts && !i.reference.artifacts).map(i => i.id);
  const missing = r.items.length - rated.length;
  if (missing) reasons.push(missing + " of " + r.items.length + " pairs are not fully rated");
  if (art.length) reasons.push("obvious artifacts in the candidate: " + art.join(", "));
  if (res.drop >= DATA.max_drop) {
    reasons.push("subjective drop " + (100 * res.drop).toFixed(1) + "% is not under " + (100 * DATA.max_drop) + "%");
  }
  if (res.cand.naturalness < DATA.min_naturalness) {
    reasons.push("candidate naturalness " + res.cand.naturalness.toFixed(2) + " is under " + DATA.min_naturalness);
  }
  if (r.overall.decision === "reject") reasons.push("you chose reject");
  return res;
}

function update() {
  const r = collect(), j = judge(r);
  const decision = j.reasons.length ? "REJECT" : "ACCEPT";
  const box = document.getElementById("summary");
  box.replaceChildren();
  const verdict = el("span", {class: decision, id: "rules-decision", text: decision});
  box.append(el("p", {}, "Rated " + j.rated + " of " + j.total + " pairs. The rules say: ", verdict));
  if (j.rated) {
    const fmt = v => v.toFixed(2);
    const th = t => el("th", {text: t}), td = t => el("td", {text: t});
    const table = el("table", {}, el("tr", {}, th(""), th("candidate NFE " + DATA.candidate_nfe),
                                     th("reference NFE " + DATA.reference_nfe)));
    for (const c of [...DATA.criteria, "overall"]) {
      table.append(el("tr", {}, td(c), td(fmt(j.cand[c])), td(fmt(j.ref[c]))));
    }
    box.append(table, el("p", {text: "Subjective drop: " + (100 * j.drop).toFixed(1) + "%"}));
  }
  if (j.reasons.length) box.append(el("ul", {}, ...j.reasons.map(t => el("li", {text: t}))));
  try { localStorage.setItem(STORE, JSON.stringify(r)); } catch (e) { /* private mode: no autosave */ }
}

function restore() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (e) { return; }
  if (!saved || !Array.isArray(saved.items)) return;
  const set = (name, value) => {
    const sel = 'input[name="' + CSS.escape(name) + '"][value="' + CSS.escape(String(value)) + '"]';
    const node = document.querySelector(sel);
    if (node) node.checked = true;
  };
  for (const s of saved.items) {
    const item = DATA.items.find(i => i.id === s.id);
    if (!item) continue;
    for (const slot of SLOTS) {
      const side = s[item[slot].is], key = item.id + "-" + slot;
      if (!side) continue;
      for (const c of DATA.criteria) if (side[c] !== null) set(key + "-" + c, side[c]);
      if (side.artifacts !== null) set(key + "-artifacts", side.artifacts ? "yes" : "no");
      const notes = document.querySelector('input[name="' + CSS.escape(key + "-notes") + '"]');
      if (notes) notes.value = side.notes || "";
    }
  }
  if (saved.overall && saved.overall.decision) set("overall-decision", saved.overall.decision);
  document.getElementById("rater").value = saved.rater || "";
  document.getElementById("overall-notes").value = (saved.overall && saved.overall.notes) || "";
}

function download() {
  const blob = new Blob([JSON.stringify(collect(), null, 2)], {type: "application/json"});
  const name = "ratings-nfe" + DATA.candidate_nfe + "-vs-" + DATA.reference_nfe + ".json";
  const a = el("a", {href: URL.createObjectURL(blob), download: name});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

render();
restore();
update();
document.addEventListener("change", update);
document.addEventListener("input", update);
document.getElementById("download").addEventListener("click", download);
</script>
</body>
</html>
"""
