"""The listening page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Writes real WAVs and spectrograms through ``build_samples``, opens ``index.html`` from disk,
plays a clip, rates every pair, downloads the ratings JSON and feeds it to the verdict.
Set ``ISHOWTTS_SCREENSHOT=docs/listening-page.png`` to refresh the screenshot in the docs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ishowttsd.engine.spec import SynthesisRequest
from ishowttsd.listening_page import build_samples
from ishowttsd.quality import RATINGS_SCHEMA, summarise_ratings, verdict_text

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SR = 24000
TEXTS = {
    "short": ("Hello there!",),
    "technical": ("Set the NFE to 7, the CFG strength to 2.0.",),
    "streaming": ("gg wp, see you all tomorrow!",),
}
# What the rater gives each clip: the candidate slightly under the reference, no artifacts.
CANDIDATE = {"naturalness": 4, "clarity": 5, "prosody": 4}
REFERENCE = {"naturalness": 5, "clarity": 5, "prosody": 4}


def sweep(request: SynthesisRequest) -> np.ndarray:
    """A real, audible test clip: a sine sweep whose wobble shrinks as the NFE grows."""
    seconds = 0.8 + 0.02 * len(request.text)
    t = np.arange(int(seconds * SR)) / SR
    f = 200.0 + 1800.0 * t / seconds + 400.0 / request.nfe * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f) / SR
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
    return np.asarray(0.3 * np.sin(phase) * fade, dtype=np.float32)


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    out = tmp_path / "samples"
    result = build_samples(
        out, sweep, texts=TEXTS, voice_id="default", candidate_nfe=6, reference_nfe=32,
        seed=1234, sample_rate=SR, untrained=True,
    )
    assert Path(result["page"]) == out / "index.html"
    assert len(list(out.glob("*.wav"))) == 6 and len(list(out.glob("*.png"))) == 6
    return out


def _launch(playwright: Any, profile: Path, downloads: Path) -> Any:
    # An empty user-data-dir: no stored state, no first-run surprises.
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        accept_downloads=True,
        downloads_path=str(downloads),
        viewport={"width": 1200, "height": 900},
        args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
    )


def _rate(page: Any, items: list[dict[str, Any]]) -> None:
    for item in items:
        for slot in ("A", "B"):
            scores = CANDIDATE if item[slot]["is"] == "candidate" else REFERENCE
            key = f"{item['id']}-{slot}"
            for criterion, value in scores.items():
                page.check(f'input[name="{key}-{criterion}"][value="{value}"]')
            page.check(f'input[name="{key}-artifacts"][value="no"]')
            page.fill(f'input[name="{key}-notes"]', f"{slot} sounds fine")


def test_listening_page_in_chromium(page_dir: Path, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    downloads = tmp_path / "downloads"
    with sync_api.sync_playwright() as pw:
        context = _launch(pw, tmp_path / "profile", downloads)
        try:
            page = context.new_page()
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((page_dir / "index.html").as_uri())
            data = page.evaluate("DATA")
            items = data["items"]
            assert [i["category"] for i in items] == list(TEXTS)
            assert page.locator("#untrained").is_visible()

            # Play the first clip: the browser decodes the WAV and the clock runs.
            page.evaluate("() => document.querySelector('audio').play()")
            page.wait_for_function(
                "() => { const a = document.querySelector('audio');"
                " return a.currentTime > 0.1 || a.played.length > 0; }",
                timeout=10_000,
            )
            assert page.evaluate("document.querySelector('audio').duration") > 0.5

            assert page.inner_text("#rules-decision") == "REJECT"  # nothing rated yet
            _rate(page, items)
            page.check('input[name="overall-decision"][value="accept"]')
            page.fill("#rater", "browser test")
            assert page.inner_text("#rules-decision") == "ACCEPT"

            first = items[0]["id"]
            reveal = page.locator(f'[data-testid="reveal-{first}"]')
            assert not reveal.is_visible()
            page.locator(f"#item-{first} button").click()
            assert "NFE 6 (candidate)" in reveal.inner_text()

            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            assert download.suggested_filename == "ratings-nfe6-vs-32.json"
            saved = tmp_path / "ratings.json"
            download.save_as(saved)
            shot = page.screenshot(full_page=True)

            # The ratings survive a reload (autosaved in the browser).
            page.reload()
            key = f"{first}-A"
            expected = (CANDIDATE if items[0]["A"]["is"] == "candidate" else REFERENCE)["naturalness"]
            assert page.is_checked(f'input[name="{key}-naturalness"][value="{expected}"]')
        finally:
            context.close()

    assert not errors, errors
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
    _check_ratings(json.loads(saved.read_text(encoding="utf-8")), items)
    target = os.environ.get("ISHOWTTS_SCREENSHOT")
    if target:
        Path(target).write_bytes(shot)
    else:
        (tmp_path / "listening-page.png").write_bytes(shot)


def _check_ratings(ratings: dict[str, Any], items: list[dict[str, Any]]) -> None:
    assert ratings["schema"] == RATINGS_SCHEMA
    assert (ratings["candidate_nfe"], ratings["reference_nfe"], ratings["untrained"]) == (6, 32, True)
    assert ratings["rater"] == "browser test"
    assert ratings["overall"]["decision"] == "accept"
    assert [i["id"] for i in ratings["items"]] == [i["id"] for i in items]
    for got in ratings["items"]:
        # The blind slots were mapped back: candidate scores are the candidate's.
        assert {k: got["candidate"][k] for k in CANDIDATE} == CANDIDATE
        assert {k: got["reference"][k] for k in REFERENCE} == REFERENCE
        assert got["candidate"]["artifacts"] is False
        assert set(got["order"].values()) == {"candidate", "reference"}
        assert got["distance_db"] > 0
    summary = summarise_ratings(ratings)
    assert summary["decision"] == "ACCEPT", summary["reasons"]
    assert any("untrained" in n for n in summary["notes"])
    assert verdict_text(summary).startswith("ACCEPT")

