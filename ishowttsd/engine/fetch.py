"""``ishowttsd fetch-model``: the one step that downloads model files (never done at run time).

It fetches the official F5TTS_v1_Base checkpoint and vocab (hf: SWivid/F5-TTS) and the Vocos
vocoder (hf: charactr/vocos-mel-24khz) into ``<state_dir>/models/``, at pinned revisions,
verifying size and sha256 where a pin is known.  Files are written to a temp name, fsynced and
renamed into place, so an interrupted fetch never leaves a half file under the real name; a
file already present with the right hash is not downloaded again.

Where the pins come from (be honest about it): the two large LFS files' sha256 and sizes, and
the two revisions, are the values another public project pins for the same files
(a model manifest for f5-tts 1.1.22; Hugging Face's file pages show the LFS sha256 too).  We
could not reach the hub from the machine this was written on to re-check them.  ``vocab.txt``
and ``config.yaml`` are small non-LFS files for which no published hash was found, so they
are fetched at the pinned revision without a hash check and their sha256 is recorded in
``models/MANIFEST.json``.  If a pinned hash does not match, the fetch fails: fix the pin only
after checking the file page on huggingface.co.

The weights are licensed CC-BY-NC-4.0 (non-commercial); the fetch refuses to run unless the
operator accepts that explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ishowttsd.durable import atomic_write, fsync_dir

from .errors import EngineError

LICENSE_NOTICE = (
    "The F5-TTS model weights (SWivid/F5-TTS) are licensed CC-BY-NC-4.0: non-commercial use only, "
    "with attribution (https://creativecommons.org/licenses/by-nc/4.0/). Vocos (charactr/vocos-mel-24khz) "
    "is MIT. Re-run with --accept-license to confirm you accept these terms."
)

DEFAULT_ENDPOINT = "https://huggingface.co"
F5_REPO = "SWivid/F5-TTS"
F5_REVISION = "84e5a410d9cead4de2f847e7c9369a6440bdfaca"
VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_REVISION = "0feb3fdd929bcd6649e0e7c5a688cf7dd012ef21"
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


class LicenseNotAccepted(EngineError):
    """fetch_model was called without accept_license."""


@dataclass(frozen=True)
class Asset:
    key: str  # what the caller gets back this file as (weights, vocab, vocoder_config, vocoder_weights)
    repo: str
    revision: str
    path: str  # inside the repo
    dest: str  # under <state_dir>/models
    size: int | None
    sha256: str | None  # None: no published pin found (see module docstring)


ASSETS: tuple[Asset, ...] = (
    Asset(
        "weights",
        F5_REPO,
        F5_REVISION,
        "F5TTS_v1_Base/model_1250000.safetensors",
        "F5TTS_v1_Base/model_1250000.safetensors",
        1348435761,
        "670900fd14e6c458b95da6e9ed317cdb20dbaf7a1c02ac06a05475a9d32b6a38",
    ),
    Asset("vocab", F5_REPO, F5_REVISION, "F5TTS_v1_Base/vocab.txt", "F5TTS_v1_Base/vocab.txt", None, None),
    Asset("vocoder_config", VOCOS_REPO, VOCOS_REVISION, "config.yaml", "vocos-mel-24khz/config.yaml", 461, None),
    Asset(
        "vocoder_weights",
        VOCOS_REPO,
        VOCOS_REVISION,
        "pytorch_model.bin",
        "vocos-mel-24khz/pytorch_model.bin",
        54365991,
        "97ec976ad1fd67a33ab2682d29c0ac7df85234fae875aefcc5fb215681a91b2a",
    ),
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, asset: Asset) -> str | None:
    """The file's sha256 if it is present and matches its pins, else None."""
    if not path.is_file() or (asset.size is not None and path.stat().st_size != asset.size):
        return None
    digest = _sha256(path)
    return digest if asset.sha256 is None or digest == asset.sha256 else None


def _download(url: str, dest: Path, asset: Asset, progress: Callable[[str], None]) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    received = 0
    last_report = -1
    request = urllib.request.Request(url, headers={"User-Agent": "ishowttsd-fetch-model"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, tmp.open("wb") as out:
            total = asset.size or int(response.headers.get("Content-Length") or 0)
            while block := response.read(_CHUNK):
                out.write(block)
                digest.update(block)
                received += len(block)
                if total:
                    pct = received * 100 // total
                    if pct // 10 != last_report // 10:
                        progress(f"{asset.dest}: {pct}% of {total / 1e6:.1f} MB")
                        last_report = pct
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise EngineError(
            f"cannot download {url}: {reason}. fetch-model needs network access to huggingface.co "
            "(or copy the files into the state dir by hand)"
        ) from None
    sha = digest.hexdigest()
    if asset.size is not None and received != asset.size:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"{url}: got {received} bytes, expected {asset.size}")
    if asset.sha256 is not None and sha != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"{url}: sha256 {sha} does not match the pinned {asset.sha256}")
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return sha


def _write_manifest(models: Path, hashes: dict[str, str]) -> None:
    body = {"sha256": hashes, "license": LICENSE_NOTICE.split(" Re-run")[0]}
    atomic_write(models / "MANIFEST.json", (json.dumps(body, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def fetch_model(
    state_dir: Path,
    *,
    accept_license: bool,
    progress: Callable[[str], None],
    endpoint: str | None = None,
) -> dict[str, Path]:
    """Download (or re-verify) the official model files; returns
    ``{"weights", "vocab", "vocoder"}`` paths (vocoder: the Vocos directory).

    Raises LicenseNotAccepted without ``accept_license`` and EngineError when offline
    (including when HF_HUB_OFFLINE=1 is set) or when a file fails its pinned hash.
    """
    if not accept_license:
        raise LicenseNotAccepted(LICENSE_NOTICE)
    progress(LICENSE_NOTICE.split(" Re-run")[0])
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise EngineError("HF_HUB_OFFLINE is set: fetch-model needs network access to huggingface.co; unset it")
    base = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    models = Path(state_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for asset in ASSETS:
        dest = models / asset.dest
        sha = _verified(dest, asset)
        if sha is not None and asset.sha256 is not None:
            progress(f"{asset.dest}: present, sha256 verified")
        else:
            url = f"{base}/{asset.repo}/resolve/{asset.revision}/{asset.path}"
            progress(f"downloading {url}")
            sha = _download(url, dest, asset, progress)
        hashes[asset.dest] = sha
        paths[asset.key] = dest
    _write_manifest(models, hashes)
    return {"weights": paths["weights"], "vocab": paths["vocab"], "vocoder": paths["vocoder_weights"].parent}
