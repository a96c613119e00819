"""The daemon's command line: run, --check-config, --apply-clocks, --fetch-model.

Only the run path imports the engine (and so torch): checking a config answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ishowttsd import __version__, config

EX_OK = 0
EX_SOFTWARE = 70


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ishowttsd",
        description="Speech-synthesis daemon: keeps F5-TTS warm and serves speech over HTTP.",
    )
    p.add_argument("--config", type=Path, help=f"config file (default {config.DEFAULT_CONFIG_PATH}; "
                   "conf.d/*.toml beside it are applied in sorted order)")
    p.add_argument("--dev", action="store_true",
                   help="a complete daemon for development: tiny untrained model on CPU, "
                   "state under ./.dev/, HTTP on 127.0.0.1:8080; --config is applied over it")
    p.add_argument("--port", type=int, help="HTTP port on 127.0.0.1 (overrides [http] listen)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check-config", action="store_true", help="validate the config and exit (0, or 78)")
    mode.add_argument("--apply-clocks", action="store_true", help="lock GPU clocks as [clocks] says, then exit")
    mode.add_argument("--restore-clocks", action="store_true", help="restore clocks stored before locking")
    mode.add_argument("--fetch-model", action="store_true",
                      help="download the official F5-TTS checkpoint, vocab and vocoder into the state dir")
    p.add_argument("--accept-license", action="store_true",
                   help="with --fetch-model: accept the weights' CC-BY-NC-4.0 licence")
    p.add_argument("--version", action="version", version=f"ishowttsd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        print(f"ishowttsd: --port {args.port}: not a TCP port (1-65535)", file=sys.stderr)
        return 2
    try:
        cfg = config.load(args.config, dev=args.dev, port=args.port)
    except config.ConfigError as exc:
        print(f"ishowttsd: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    if args.check_config:
        print(f"config OK: {', '.join(cfg.sources) or 'built-in defaults'}")
        return EX_OK
    if args.apply_clocks or args.restore_clocks:
        from ishowttsd import clocks

        return clocks.cli_apply(cfg.clocks) if args.apply_clocks else clocks.cli_restore(cfg.clocks)
    if args.fetch_model:
        return _fetch_model(cfg, accept_license=args.accept_license)
    from ishowttsd.daemon import run_daemon

    return run_daemon(cfg, config_path=args.config, dev=args.dev, port=args.port, cwd=Path(os.getcwd()))


def _fetch_model(cfg: config.Config, *, accept_license: bool) -> int:
    from ishowttsd.engine.errors import EngineError
    from ishowttsd.engine.fetch import fetch_model

    try:
        paths = fetch_model(cfg.state_dir, accept_license=accept_license,
                            progress=lambda msg: print(msg, file=sys.stderr))
    except EngineError as exc:
        print(f"ishowttsd: fetch-model: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return EX_OK
