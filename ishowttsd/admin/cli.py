"""``ishowtts-admin``: change and inspect a running ishowttsd through its admin socket.

Results go to stdout, messages and progress to stderr.  Exit codes (see DESIGN.md):
0 ok, 1 a check failed, 2 usage, 3 permission denied, 4 daemon not reachable,
5 the daemon refused the request (or failed: a 5xx answer is reported as a daemon bug).

Only the stdlib is imported at start, so ``ishowtts-admin status`` answers at once; the few
subcommands that draw (``--plot``, ``quality-samples``) import their helpers when they run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ishowttsd.admin.client import (
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT_S,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SOCKET_ENV,
    AdminClient,
    AdminError,
    DaemonBug,
    NotReachable,
    resolve_socket,
)

if TYPE_CHECKING:
    from ishowttsd.config import SelfcheckConfig

PROG = "ishowtts-admin"
Handler = Callable[[AdminClient, argparse.Namespace], int]


# --------------------------------------------------------------------------- output helpers


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _aligned(rows: Iterable[tuple[str, str]], indent: str = "") -> str:
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{indent}{label:<{width}}  {value}".rstrip() for label, value in rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s:02d}s" if minutes else f"{s}s"


def _get(data: Any, *keys: str, default: Any = None) -> Any:
    """data[k1][k2]... or ``default``: status answers from other daemon versions may lack keys."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


def _user(uid: Any) -> str:
    if not isinstance(uid, int):
        return "-"
    import pwd  # stdlib, cheap; only the history view needs it

    try:
        return f"{pwd.getpwuid(uid).pw_name}({uid})"
    except KeyError:
        return str(uid)


class Progress:
    """Renders NDJSON progress events on stderr: a redrawn bar on a terminal, lines elsewhere.

    Plain lines keep the journal readable when systemd runs the weekly self-check.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.drawn = False

    def update(self, event: Mapping[str, Any]) -> None:
        done, total = event.get("done", 0), event.get("total", 0)
        stage, text = str(event.get("stage") or ""), str(event.get("text") or "")
        label = f"{stage}: {text}" if stage and text else stage or text
        if not self.tty:
            self.stream.write(f"[{done}/{total}] {label}\n")
            self.stream.flush()
            return
        width = shutil.get_terminal_size((80, 24)).columns
        bar_w = 24
        filled = int(bar_w * done / total) if isinstance(total, int) and total > 0 else 0
        head = f"[{'#' * filled}{'.' * (bar_w - filled)}] {done}/{total} "
        room = max(width - len(head) - 1, 0)
        label = label if len(label) <= room else label[: max(room - 1, 0)] + "…"
        self.stream.write(f"\r\x1b[K{head}{label}")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def _follow(events: Iterable[dict[str, Any]], on_other: Callable[[dict[str, Any]], None] | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
    """Show progress events, pass other events on, and return the final result event."""
    bar = progress or Progress()
    try:
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                bar.update(event)
            elif kind == "result":
                return event
            elif on_other is not None:
                on_other(event)
    finally:
        bar.finish()
    raise NotReachable("the daemon ended the stream before sending a result; "
                       "see `journalctl -u ishowttsd` for what happened")


# --------------------------------------------------------------------------- status


def _fast_path(fast: Mapping[str, Any]) -> str:
    """"compile + CUDA graphs, attention flash, q/k rotated in the GEMM", or "off (eager)"."""
    parts = [name for key, name in (("compiled", "compile"), ("cuda_graphs", "CUDA graphs")) if fast.get(key)]
    if not parts:  # the engine builds the fast path only for one of them
        return "off (eager)"
    shown = " + ".join(parts) + (f", attention {fast['attention']}" if fast.get("attention") else "")
    return shown + (", q/k rotated in the GEMM" if fast.get("qkv_epilogue") else "")


def format_status(s: Mapping[str, Any]) -> str:
    """The compact, aligned human view of GET /v1/status."""
    model = _get(s, "model", default={}) or {}
    weights = str(model.get("weights", "?"))
    if s.get("untrained") or weights == "untrained":
        weights = "untrained (random weights: audio is noise)"
    ready = "" if s.get("ready", True) else f", NOT READY: {s.get('not_ready_reason') or '?'}"
    rows = [
        ("daemon", f"ishowttsd {s.get('version', '?')}, up {_duration(s.get('uptime_s'))}{ready}"),
        ("model", f"{model.get('architecture', '?')}, {model.get('precision', '?')} on {model.get('device', '?')}"),
        ("weights", weights),
    ]
    if model.get("gpu_name"):
        mem = model.get("gpu_memory_mb")
        rows.append(("gpu", f"{model['gpu_name']}" + (f", {mem} MiB" if mem is not None else "")))
    if isinstance(model.get("fast_path"), Mapping):
        rows.append(("fast path", _fast_path(model["fast_path"])))
    rows += _settings_rows(s)
    voices = _get(s, "voices", default=[]) or []
    rows.append(("voices", ", ".join(f"{v.get('id', '?')} ({v.get('language', '?')})" for v in voices) or "none"))
    queue = _get(s, "queue", default={}) or {}
    rows.append(("queue", f"{queue.get('depth', '?')} waiting of {queue.get('size', '?')}"))
    rows.append(("requests", _requests(_get(s, "requests", default={}) or {})))
    rows.append(("clocks", format_clocks_line(_get(s, "clocks", default={}) or {})))
    rows.append(("self-check", _selfcheck_line(s.get("selfcheck"))))
    versions = _get(s, "versions", default={}) or {}
    rows.append(("versions", ", ".join(f"{k.replace('_', '-')} {v or 'none'}" for k, v in versions.items()) or "?"))
    return _aligned(rows)


def _settings_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    settings = _get(s, "settings", default={}) or {}
    nfe_src = _get(settings, "nfe", "source")
    rows = [("nfe", f"{s.get('nfe', '?')}" + (f" ({nfe_src})" if nfe_src else ""))]
    rows.append(("settings", f"version {s.get('settings_version', '?')}"))
    # Settings other than nfe (none yet) get a line each, with where their value came from.
    rows += [(f"  {k}", f"{_get(v, 'value')} ({_get(v, 'source', default='?')})")
             for k, v in settings.items() if k != "nfe"]
    return rows


def _requests(req: Mapping[str, Any]) -> str:
    by = req.get("by_status") or {}
    detail = ", ".join(f"{k} {v}" for k, v in by.items())
    return f"{req.get('total', '?')} total" + (f" ({detail})" if detail else "")


def _selfcheck_line(sc: Any) -> str:
    if not isinstance(sc, Mapping):
        return "never run"
    return f"{sc.get('status', '?')} at {sc.get('time', '?')}"


def format_clocks_line(c: Mapping[str, Any]) -> str:
    """One line for status: provider, power mode, GPU frequency, locked yes/no."""
    if not c:
        return "?"
    obj = _clock_state(c)
    if obj is not None:
        from ishowttsd.clocks import summary

        line = str(summary(obj))
        # The status row is already labelled "clocks".
        return line.removeprefix("clocks ")
    locked = {True: "locked", False: "UNLOCKED", None: "lock state unknown"}.get(c.get("locked"), "?")
    if c.get("provider") == "none":
        return "not managed (provider none)"
    mode = c.get("power_mode")
    mode_s = "?" if mode is None else str(mode)
    if c.get("power_mode_name"):
        mode_s += f" ({c['power_mode_name']})"
    return f"{locked}: {c.get('provider', '?')}, power mode {mode_s}, GPU {_mhz(c.get('gpu_freq_hz'))}"


def _mhz(hz: Any) -> str:
    return f"{hz / 1e6:.0f} MHz" if isinstance(hz, (int, float)) else "?"


def cmd_status(client: AdminClient, args: argparse.Namespace) -> int:
    status = client.status()
    if args.json:
        _print_json(status)
    else:
        print(format_status(status))
    return EXIT_OK


# --------------------------------------------------------------------------- settings


def _changes_text(changes: Any) -> str:
    if not isinstance(changes, Mapping) or not changes:
        return "-"
    return ", ".join(f"{k} {_get(c, 'old')} -> {_get(c, 'new')}" for k, c in changes.items())


def cmd_set_nfe(client: AdminClient, args: argparse.Namespace) -> int:
    if args.validate:
        return _set_nfe_validated(client, args)
    res = client.set_nfe(args.nfe)
    if args.json:
        _print_json(res)
        return EXIT_OK
    print(f"nfe: {res.get('old', '?')} -> {res.get('new', args.nfe)} (settings version {res.get('version', '?')})")
    if res.get("epss"):
        print(f"note: {res.get('new', args.nfe)} steps has an upstream EPSS table "
              "(Empirically Pruned Step Sampling)")
    _say("applies to requests that start from now on; in-flight requests finish with the old value")
    return EXIT_OK


def _set_nfe_validated(client: AdminClient, args: argparse.Namespace) -> int:
    result = _follow(client.set_nfe_validated(args.nfe))
    if args.json:
        _print_json(result)
    else:
        print(_validation_text(result, args.nfe))
    return EXIT_OK if result.get("ok") else EXIT_CHECK_FAILED


def _validation_text(result: Mapping[str, Any], nfe: int) -> str:
    old, version = result.get("old", "?"), result.get("version", "?")
    reasons = [str(r) for r in result.get("reasons") or []]
    if result.get("ok"):
        lines = [f"nfe: {old} -> {result.get('new', nfe)} (settings version {version}), validation passed"]
        lines += [f"  note: {r}" for r in reasons]
        if result.get("epss"):
            lines.append(f"note: {nfe} steps has an upstream EPSS table (Empirically Pruned Step Sampling)")
        lines += [f"note: {n}" for n in result.get("notes") or []]
        return "\n".join(lines)
    lines = [f"nfe {nfe}: validation FAILED"]
    lines += [f"  - {r}" for r in reasons] or ["  - (the daemon gave no reason)"]
    lines += [f"note: {n}" for n in result.get("notes") or []]
    if result.get("rolled_back"):
        restored = result.get("restored_nfe", old)
        rb_version = result.get("rollback_version", "?")
        lines.append(f"rolled back: nfe is {restored} again (settings version {rb_version})")
    else:
        lines.append("NOT rolled back: check `ishowtts-admin status` and `ishowtts-admin rollback`")
    return "\n".join(lines)


def cmd_rollback(client: AdminClient, args: argparse.Namespace) -> int:
    res = client.rollback(args.to)
    if args.json:
        _print_json(res)
        return EXIT_OK
    target = "the previous version" if args.to is None else f"version {args.to}"
    print(f"rolled back to {target} as settings version {res.get('version', '?')}: "
          f"{_changes_text(res.get('changes'))}")
    return EXIT_OK


def _validation_note(validation: Any) -> str | None:
    if not isinstance(validation, Mapping):
        return None
    if "ok" in validation:
        return "validated" if validation["ok"] else "validation FAILED"
    if "rollback_of" in validation:
        return f"automatic rollback of version {validation['rollback_of']}"
    return None


def format_settings_history(versions: Sequence[Mapping[str, Any]]) -> str:
    header = ["version", "time", "user", "command", "changes", "note"]
    rows = []
    for v in versions:
        note = [str(v["note"])] if v.get("note") else []
        if (checked := _validation_note(v.get("validation"))) is not None:
            note.append(checked)
        rows.append([str(v.get("version", "?")), str(v.get("time") or "-"), _user(v.get("uid")),
                     str(v.get("command", "?")), _changes_text(v.get("changes")), "; ".join(note)])
    return _table(header, rows)


def cmd_history(client: AdminClient, args: argparse.Namespace) -> int:
    if args.selfcheck or args.plot:
        return _selfcheck_history(client, args)
    versions = client.history()
    if args.last is not None:
        versions = versions[-args.last:] if args.last > 0 else []
    if args.json:
        _print_json(versions)
    else:
        print(format_settings_history(versions))
    return EXIT_OK


def _selfcheck_history(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.selfcheck_history(args.last)
    records = list(answer.get("records") or [])
    if args.json:
        _print_json(records)
    else:
        from ishowttsd.selfcheck import format_history

        print(format_history(records, args.last if args.last is not None else 20))
    if args.plot:
        from ishowttsd.plots import plot_history  # matplotlib: only when asked

        plot_history(records, Path(args.plot), _thresholds(answer, records))
        _say(f"wrote {args.plot}")
    return EXIT_OK


def _thresholds(answer: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> SelfcheckConfig:
    """The daemon's [selfcheck] thresholds: from the answer, else the newest record, else defaults."""
    from ishowttsd.config import SelfcheckConfig

    given = answer.get("thresholds") or _get(records[-1] if records else {}, "thresholds") or {}
    fields = SelfcheckConfig.__dataclass_fields__
    known: dict[str, Any] = {k: v for k, v in given.items() if k in fields and isinstance(v, (int, float))}
    return SelfcheckConfig(**known)


def cmd_reload(client: AdminClient, args: argparse.Namespace) -> int:
    _say("reloading (returns when the new config and voices are in force)...")
    res = client.reload()
    if args.json:
        _print_json(res)
        return EXIT_OK
    detail = "model reloaded and swapped" if res.get("model_reloaded") else "model unchanged"
    print(f"reloaded: {detail}")
    return EXIT_OK


# --------------------------------------------------------------------------- self-check


def _selfcheck_params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("nfe", "max_mean_rtf", "max_rtf", "max_cv", "max_slowdown", "compare_nfe")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def cmd_selfcheck(client: AdminClient, args: argparse.Namespace) -> int:
    result = _follow(client.selfcheck(_selfcheck_params(args)))
    record = result.get("record") or {}
    status = _get(record, "verdict", "status", default="?")
    if args.json:
        _print_json(record)
    else:
        from ishowttsd.selfcheck import format_report

        print(format_report(record))
    if status == "fail":
        for reason in _get(record, "verdict", "reasons", default=[]) or []:
            _say(f"self-check failed: {reason}")
        return EXIT_CHECK_FAILED
    if status not in ("pass", "warn"):
        _say(f"self-check gave no verdict (status {status!r}); treating it as failed")
        return EXIT_CHECK_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- clocks


def _clock_state(state: Mapping[str, Any]) -> Any:
    """Rebuild ``ishowttsd.clocks.ClockState`` from GET /v1/clocks; None if the dict does not fit."""
    try:
        from ishowttsd import clocks

        gpu = state.get("gpu")
        known = {f for f in clocks.ClockState.__dataclass_fields__ if f not in ("gpu", "problems")}
        return clocks.ClockState(
            **{k: v for k, v in state.items() if k in known},
            problems=tuple(state.get("problems") or ()),
            gpu=clocks.GpuContext(**gpu) if isinstance(gpu, Mapping) else None,
        )
    except (ImportError, AttributeError, TypeError, KeyError):
        # A daemon of another version sends other keys: the caller shows them generically.
        return None


def format_clocks(state: Mapping[str, Any]) -> str:
    """The detailed clock view: ``ishowttsd.clocks.format_state`` when the dict fits it."""
    obj = _clock_state(state)
    if obj is not None:
        from ishowttsd.clocks import format_state

        return format_state(obj)
    rows = [(k, _clock_value(k, v)) for k, v in state.items() if not isinstance(v, Mapping)]
    return f"GPU clocks: {format_clocks_line(state)}\n{_aligned(rows, '  ')}"


def _clock_value(key: str, value: Any) -> str:
    if key.endswith("_hz"):
        return _mhz(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(map(str, value)) or "-"
    return "?" if value is None else str(value)


def cmd_clocks(client: AdminClient, args: argparse.Namespace) -> int:
    state = client.clocks()
    if args.json:
        _print_json(state)
    else:
        print(format_clocks(state))
    return EXIT_OK


# --------------------------------------------------------------------------- quality


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "text"


class SampleWriter:
    """Writes each streamed pair's WAVs and spectrograms; collects what the page needs."""

    def __init__(self, out: Path, nfe: int, against: int) -> None:
        self.out, self.nfe, self.against = out, nfe, against
        self.pairs: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") != "pair":
            return
        import io

        import soundfile  # only quality-samples decodes audio

        from ishowttsd.listening_page import write_pair_files

        index = len(self.pairs) + 1
        stem = f"{index:02d}-{_slug(str(event.get('category', 'text')))}"
        pair = {k: v for k, v in event.items() if k not in ("event", "candidate_wav_b64", "reference_wav_b64")}
        pair["index"] = index
        audio = {}
        for side in ("candidate", "reference"):
            audio[side], sr = soundfile.read(io.BytesIO(base64.b64decode(event[f"{side}_wav_b64"])),
                                             dtype="float32", always_2d=False)
        pair.update(write_pair_files(self.out, stem, audio["candidate"], audio["reference"], sr))
        self.pairs.append(pair)


def cmd_quality_samples(client: AdminClient, args: argparse.Namespace) -> int:
    out = Path(args.out or f"quality-samples-nfe{args.nfe}-vs-{args.against}")
    out.mkdir(parents=True, exist_ok=True)
    writer = SampleWriter(out, args.nfe, args.against)
    result = _follow(client.quality_samples(args.nfe, args.against), on_other=writer)
    from ishowttsd.listening_page import write_listening_page

    untrained, seed = bool(result.get("untrained")), result.get("seed")
    if not isinstance(seed, int):
        raise DaemonBug(f"the daemon's quality-samples result has no integer seed: {result!r}")
    write_listening_page(out, writer.pairs, candidate_nfe=args.nfe, reference_nfe=args.against,
                         untrained=untrained, seed=seed)
    if untrained:
        _say("note: the daemon runs untrained (random) weights: these samples are noise, and the "
             "distances only show how far the solver is from convergence")
    print(f"wrote {len(writer.pairs)} pairs to {out}/; open {out / 'index.html'} in a browser")
    return EXIT_OK


def cmd_quality_verdict(args: argparse.Namespace) -> int:
    try:
        ratings = json.loads(Path(args.ratings).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _say(f"{PROG}: cannot read ratings from {args.ratings}: {exc}")
        return EXIT_USAGE
    from ishowttsd.quality import summarise_ratings, verdict_text

    try:
        summary = summarise_ratings(ratings)
    except (ValueError, KeyError, TypeError) as exc:
        _say(f"{PROG}: {args.ratings} is not a ratings file from the listening page: {exc}")
        return EXIT_USAGE
    print(verdict_text(summary))
    return EXIT_OK if _accepted(summary) else EXIT_CHECK_FAILED


def _accepted(summary: Mapping[str, Any]) -> bool:
    return summary.get("decision") == "ACCEPT"


# --------------------------------------------------------------------------- argv


def _fraction(text: str) -> float:
    """0.1 or 10%: thresholds such as --max-slowdown read both ways."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and change a running ishowttsd through its admin socket.",
        epilog="exit codes: 0 ok, 1 a check failed, 2 usage, 3 permission denied, "
        "4 daemon not reachable, 5 refused by the daemon",
    )
    parser.add_argument("--socket", metavar="PATH",
                        help=f"admin socket (default: ${SOCKET_ENV}, else {DEFAULT_SOCKET})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="give up on a quick request after this long (long operations wait)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    json_opt = argparse.ArgumentParser(add_help=False)
    json_opt.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")

    p = sub.add_parser("status", parents=[json_opt], help="version, model, NFE, queue, clocks, last self-check")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("set-nfe", parents=[json_opt], help="set the NFE steps for new requests (1-64)")
    p.add_argument("nfe", type=int, metavar="N")
    p.add_argument("--validate", action="store_true",
                   help="run the self-check and quality gate at N; roll back if either fails")
    p.set_defaults(func=cmd_set_nfe)

    p = sub.add_parser("rollback", parents=[json_opt],
                       help="restore the previous (or --to) settings version, as a new version")
    p.add_argument("--to", type=_nonneg_int, metavar="VERSION")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", parents=[json_opt], help="settings versions (or --selfcheck runs)")
    p.add_argument("--selfcheck", action="store_true", help="self-check runs instead of settings versions")
    p.add_argument("--last", type=_nonneg_int, metavar="N", help="only the last N entries")
    p.add_argument("--plot", metavar="FILE.png", help="draw self-check RTF over time per NFE (implies --selfcheck)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("reload", parents=[json_opt], help="re-read the config and voices; swap the model if changed")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("self-check", parents=[json_opt], help="benchmark the served model; exit 1 on a regression")
    p.add_argument("--nfe", type=int, metavar="N")
    p.add_argument("--max-mean-rtf", type=_fraction, metavar="X")
    p.add_argument("--max-rtf", type=_fraction, metavar="X")
    p.add_argument("--max-cv", type=_fraction, metavar="X")
    p.add_argument("--max-slowdown", type=_fraction, metavar="X", help="e.g. 0.10 or 10%%")
    p.add_argument("--compare-nfe", type=int, metavar="N", help="also time NFE N and report the speedup")
    p.set_defaults(func=cmd_selfcheck)

    p = sub.add_parser("clocks", parents=[json_opt], help="GPU clock lock state, read live")
    p.set_defaults(func=cmd_clocks)

    p = sub.add_parser("quality-samples", help="write A/B WAV pairs and a listening page")
    p.add_argument("--nfe", type=int, required=True, metavar="N", help="the candidate NFE")
    p.add_argument("--against", type=int, required=True, metavar="M", help="the reference NFE")
    p.add_argument("--out", metavar="DIR", help="default: ./quality-samples-nfeN-vs-M")
    p.set_defaults(func=cmd_quality_samples)

    p = sub.add_parser("quality-verdict", help="ACCEPT or REJECT from the listening page's ratings.json")
    p.add_argument("ratings", metavar="ratings.json")
    p.set_defaults(func=None, local=cmd_quality_verdict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    try:
        if args.func is None:
            return int(args.local(args))
        client = AdminClient(resolve_socket(args.socket), timeout=args.timeout)
        return int(args.func(client, args))
    except AdminError as exc:
        _say(f"{PROG}: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted (the daemon finishes or abandons the operation on its own)")
        return 130
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
