"""PNG plots for people who would rather look than read: the self-check trend and spectrograms.

matplotlib is imported inside the functions, and only its object API with the Agg canvas is
used (never pyplot): no display is needed, no global figure state is shared between
threads, and ``ishowtts-admin`` does not pay matplotlib's import time unless it plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ishowttsd.config import SelfcheckConfig
from ishowttsd.quality import mel_power

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _when(record: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return None


def _series(records: Sequence[Mapping[str, Any]]) -> dict[Any, list[tuple[datetime, float, float]]]:
    """NFE -> [(time, mean RTF, max RTF)] for every record with a time and stats."""
    out: dict[Any, list[tuple[datetime, float, float]]] = {}
    for rec in records:
        when, stats = _when(rec), rec.get("stats") or {}
        mean, peak = stats.get("rtf_mean"), stats.get("rtf_max")
        if when is None or not isinstance(mean, (int, float)):
            continue
        nfe = (rec.get("context") or {}).get("nfe", "?")
        out.setdefault(nfe, []).append((when, float(mean), float(peak if peak is not None else mean)))
    return out


def _nfe_order(item: tuple[Any, Any]) -> tuple[int, float, str]:
    """Numeric NFEs in numeric order (7 before 32), anything else after them."""
    nfe = item[0]
    if isinstance(nfe, (int, float)) and not isinstance(nfe, bool):
        return (0, float(nfe), "")
    return (1, 0.0, str(nfe))


def plot_history(records: Sequence[Mapping[str, Any]], path: Path | str, thresholds: SelfcheckConfig) -> Path:
    """RTF over time, one line per NFE (mean, with max as faint marks), and the threshold lines."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    series = _series(records)
    for nfe, points in sorted(series.items(), key=_nfe_order):
        points.sort()
        times = date2num([p[0] for p in points])
        (line,) = ax.plot(times, [p[1] for p in points], marker="o", label=f"NFE {nfe} mean")
        ax.scatter(times, [p[2] for p in points], marker="^", alpha=0.35, color=line.get_color())
    mean_label = f"max mean RTF {thresholds.max_mean_rtf:g}"
    # Thresholds in greys/black so they never share a colour with an NFE series.
    ax.axhline(thresholds.max_mean_rtf, color="black", linestyle="--", label=mean_label)
    ax.axhline(thresholds.max_rtf, color="dimgray", linestyle=":", label=f"max RTF {thresholds.max_rtf:g}")
    if not series:
        ax.text(0.5, 0.5, "no self-check history yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("ishowttsd self-check: real-time factor over time (triangles: max RTF)")
    ax.set_ylabel("RTF (lower is faster)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    if series:
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return _save(fig, path)


def spectrogram_png(audio: np.ndarray, sample_rate: int, path: Path | str, *, title: str | None = None) -> Path:
    """A log-mel spectrogram (the bands the quality distance uses), in dB under the clip's peak."""
    power = mel_power(audio, sample_rate)
    db = 10.0 * np.log10(np.maximum(power, 1e-12))
    db = np.maximum(db, db.max() - 80.0) - db.max()
    fig = _figure(6, 2.2)
    ax = fig.add_subplot()
    duration = len(np.asarray(audio)) / sample_rate
    image = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", extent=(0.0, duration, 0, db.shape[1]))
    fig.colorbar(image, ax=ax, label="dB")
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig: Figure, path: Path | str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
