"""A fake Jetson for tests: a sysfs tree, a release file, and emulated nvpmodel / jetson_clocks.

`FakeJetson.create(root)` lays out, under ``root``::

    sys/class/devfreq/<name> -> ../../devices/platform/<name>/devfreq/<name>
    sys/devices/platform/<name>/{railgate_enable,of_node/compatible,of_node/name}
    sys/devices/platform/<name>/devfreq/<name>/{min_freq,max_freq,cur_freq,governor,...}
    sys/class/devfreq/15340000.vic   (a decoy devfreq node that is not the GPU)
    etc/nv_tegra_release             (an L4T R35.4.1 first line)
    etc/nvpmodel.json                (the fake's mode table: id, name, GPU min/max Hz)
    var/lib/nvpmodel/status          (the current mode, "pmode:0002" like the real file)
    fake/calls.jsonl                 (one JSON line per tool call: argv, uid, PATH, ...)
    fake/<action>-<tool>             (markers: fail-, hang-, ignore-; see mark())

The executables in ``bin/`` (put that folder first on PATH) find the tree through
``$FAKE_JETSON_ROOT`` and refuse to run without it, so they can never touch the real /sys.
Output formats and sysfs effects follow the real tools; README.md says where each comes from.
Standard library only, Python 3.8+: the tools run under whichever python3 PATH finds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
ROOT_ENV = "FAKE_JETSON_ROOT"

# L4T R35.4.1 (JetPack 5.1.2), the release whose Orin GPU devfreq node is 17000000.ga10b.
R35_RELEASE = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023"
)
# AGX Orin 64GB: mode ids and names as nvpmodel reports them; GPU floor 306 MHz and the
# MAXN / MODE_50W ceilings are from real `jetson_clocks --show` output (see README.md).
AGX_ORIN_MODES: list[dict[str, Any]] = [
    {"id": 0, "name": "MAXN", "gpu_min": 306000000, "gpu_max": 1300500000},
    {"id": 1, "name": "MODE_15W", "gpu_min": 306000000, "gpu_max": 408000000},
    {"id": 2, "name": "MODE_30W", "gpu_min": 306000000, "gpu_max": 612000000},
    {"id": 3, "name": "MODE_50W", "gpu_min": 306000000, "gpu_max": 816000000},
]
# device name -> the of_node compatible string the real kernel exposes for it.
COMPATIBLE = {
    "17000000.ga10b": "nvidia,ga10b",
    "17000000.gpu": "nvidia,ga10b",
    "17000000.gv11b": "nvidia,gv11b",
    "17000000.gp10b": "nvidia,gp10b",
    "57000000.gpu": "nvidia,gm20b",
    "gpu.0": "nvidia,gm20b",
}
FAKE_GPU_COMPATIBLES = set(COMPATIBLE.values())


class FakeJetson:
    """The fake tree at ``root``: build it, steer the fake tools, read back what they did."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- building

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        devfreq_name: str = "17000000.ga10b",
        mode: int = 2,
        release: str | None = R35_RELEASE,
        modes: list[dict[str, Any]] | None = None,
        compatible: str | None = None,
    ) -> FakeJetson:
        """A Jetson as it boots: in ``mode``, clocks unlocked (GPU idle at its floor)."""
        fake = cls(root)
        table = modes if modes is not None else AGX_ORIN_MODES
        _write(fake.root / "etc" / "nvpmodel.json", json.dumps(table, indent=1))
        if release is not None:
            _write(fake.release_file, release + "\n")
        fake._devfreq_node(devfreq_name, compatible or COMPATIBLE.get(devfreq_name, "nvidia,ga10b"), "gpu")
        fake._devfreq_node("15340000.vic", "nvidia,tegra234-vic", "vic", freq=115200000)
        (fake.root / "fake").mkdir(parents=True, exist_ok=True)
        # Calls made as an unprivileged user (the not-root tests) must still be logged.
        fake.log_file.touch()
        fake.log_file.chmod(0o666)
        set_mode(fake.root, _mode_entry(table, mode))
        return fake

    def _devfreq_node(self, name: str, compatible: str, of_name: str, freq: int = 306000000) -> None:
        device = self.sys_root / "devices" / "platform" / name
        node = device / "devfreq" / name
        _write(device / "of_node" / "compatible", compatible + "\0")
        _write(device / "of_node" / "name", of_name + "\0")
        _write(device / "railgate_enable", "1\n")
        for key, value in (("min_freq", freq), ("max_freq", freq), ("cur_freq", freq)):
            _write(node / key, f"{value}\n")
        _write(node / "governor", "nvhost_podgov\n")
        (node / "device").symlink_to("../..")
        link = self.sys_root / "class" / "devfreq" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../devices/platform") / name / "devfreq" / name)

    # ---- where things are

    @property
    def sys_root(self) -> Path:
        return self.root / "sys"

    @property
    def release_file(self) -> Path:
        return self.root / "etc" / "nv_tegra_release"

    @property
    def store_file(self) -> Path:
        return self.root / "var" / "lib" / "ishowtts" / "jetson_clocks.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "fake" / "calls.jsonl"

    def env(self, base: dict[str, str] | None = None, *, tools_on_path: bool = True) -> dict[str, str]:
        """An environment whose PATH finds the fake tools first."""
        env = dict(os.environ if base is None else base)
        env[ROOT_ENV] = str(self.root)
        if tools_on_path:
            env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def clocks_values(self, **overrides: Any) -> dict[str, Any]:
        """``[clocks]`` keys pointing at this tree (for ClocksConfig(**...) or a TOML file)."""
        values: dict[str, Any] = {
            "provider": "jetson",
            "sysfs_root": str(self.sys_root),
            "release_file": str(self.release_file),
            "store_file": str(self.store_file),
            "timeout_s": 10.0,
        }
        values.update(overrides)
        return values

    # ---- steering the tools

    def mark(self, action: str, tool: str, when: str = "") -> None:
        """Make ``tool`` misbehave: action is ``fail`` (exit 1), ``hang`` (sleep in a child,
        as a stuck shell script would) or ``ignore`` (exit 0 and change nothing, as real
        jetson_clocks does when a sysfs write fails).  ``when`` limits it to calls whose
        first argument equals it (``--store``, ``-m``, ``-q``; ``lock`` for bare jetson_clocks)."""
        _write(self.root / "fake" / f"{action}-{tool}", when)

    def require_reboot(self) -> None:
        """The next nvpmodel -m asks "DO YOU WANT TO REBOOT NOW?" like the real one can."""
        _write(self.root / "fake" / "reboot-required", "")

    # ---- reading back

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        rows = [json.loads(x) for x in self.log_file.read_text().splitlines() if x.strip()]
        return [r for r in rows if tool is None or r["tool"] == tool]

    def argvs(self) -> list[list[str]]:
        """[tool, *args] of every call, in order."""
        return [[r["tool"], *r["argv"]] for r in self.calls()]

    def gpu(self) -> dict[str, int]:
        node = gpu_node(self.root)
        assert node is not None
        values = {k: int((node / k).read_text()) for k in ("min_freq", "max_freq", "cur_freq")}
        values["railgate"] = int((node / "device" / "railgate_enable").read_text())
        return values

    def mode(self) -> int:
        return current_mode(self.root)["id"]


# ---------------------------------------------------------------- shared by the two tools


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _mode_entry(table: list[dict[str, Any]], mode_id: int) -> dict[str, Any]:
    for entry in table:
        if entry["id"] == mode_id:
            return entry
    raise KeyError(mode_id)


def modes(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "etc" / "nvpmodel.json").read_text())


def current_mode(root: Path) -> dict[str, Any]:
    status = (root / "var" / "lib" / "nvpmodel" / "status").read_text()
    return _mode_entry(modes(root), int(status.split()[0].partition(":")[2]))


def gpu_node(root: Path) -> Path | None:
    """Like NVIDIA's jetson_clocks: the devfreq entry whose device compatible is a GPU's."""
    base = root / "sys" / "class" / "devfreq"
    for entry in sorted(base.iterdir()):
        compat = (entry / "device" / "of_node" / "compatible").read_text().split("\0")
        if FAKE_GPU_COMPATIBLES.intersection(compat):
            return entry
    return None


def set_mode(root: Path, entry: dict[str, Any]) -> None:
    """What a power-mode change does: new ceiling, floor back to the mode's minimum (unlocked)."""
    _write(root / "var" / "lib" / "nvpmodel" / "status", f"pmode:{entry['id']:04d} fmode:quiet\n")
    node = gpu_node(root)
    if node is not None:
        (node / "max_freq").write_text(f"{entry['gpu_max']}\n")
        (node / "min_freq").write_text(f"{entry['gpu_min']}\n")
        (node / "cur_freq").write_text(f"{entry['gpu_min']}\n")  # idle: the governor drops to the floor


def _log(root: Path, tool: str, argv: list[str]) -> None:
    row = {
        "tool": tool,
        "argv": argv,
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "path": os.environ.get("PATH", ""),
        "lc_all": os.environ.get("LC_ALL"),
        "stdin_tty": sys.stdin.isatty() if sys.stdin else False,
        "t": time.time(),
    }
    with (root / "fake" / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def _marker(root: Path, action: str, tool: str, first_arg: str) -> bool:
    path = root / "fake" / f"{action}-{tool}"
    if not path.exists():
        return False
    when = path.read_text().strip()
    return when in ("", first_arg)


def _misbehave(root: Path, tool: str, first_arg: str) -> int | None:
    """Apply fail/hang markers; returns an exit code when the call must end now."""
    if _marker(root, "hang", tool, first_arg):
        # A child holds stdout/stderr open, like the `cat`s of a stuck shell script.
        child = subprocess.Popen(["sleep", "3600"])
        (root / "fake" / f"hang-{tool}.pid").write_text(f"{os.getpid()} {child.pid}\n")
        child.wait()
        return 1
    if _marker(root, "fail", tool, first_arg):
        print(f"Error: fake {tool} told to fail (marker fake/fail-{tool})", file=sys.stderr)
        return 1
    return None


def _setup(tool: str, argv: list[str]) -> tuple[Path, str] | int:
    root_env = os.environ.get(ROOT_ENV)
    if not root_env:
        print(f"fake {tool}: ${ROOT_ENV} is not set; refusing to touch the real system", file=sys.stderr)
        return 2
    root = Path(root_env)
    _log(root, tool, argv)
    return root, (argv[0] if argv else "lock")


# ---------------------------------------------------------------- nvpmodel


def nvpmodel_main(argv: list[str]) -> int:
    setup = _setup("nvpmodel", argv)
    if isinstance(setup, int):
        return setup
    root, first = setup
    code = _misbehave(root, "nvpmodel", first)
    if code is not None:
        return code
    if first == "-q":
        return _nvpmodel_query(root)
    if first == "-m" and len(argv) >= 2:
        return _nvpmodel_set(root, argv[1])
    if first == "-p":
        for entry in modes(root):
            print(f"< POWER_MODEL ID={entry['id']} NAME={entry['name']} >")
        return 0
    print("NVPM ERROR: bad arguments (fake nvpmodel knows -q, -m N, -p)", file=sys.stderr)
    return 1


def _nvpmodel_query(root: Path) -> int:
    entry = current_mode(root)
    print(f"NV Power Mode: {entry['name']}")
    print(entry["id"])
    if os.geteuid() != 0:
        # Real boards print this after the mode when not root (errno 13, EACCES).
        print("NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13")
    return 0


def _nvpmodel_set(root: Path, arg: str) -> int:
    if os.geteuid() != 0:
        print("NVPM ERROR: fake nvpmodel: setting a power mode needs root", file=sys.stderr)
        return 1
    try:
        entry = _mode_entry(modes(root), int(arg))
    except (KeyError, ValueError):
        print(f"NVPM ERROR: request for bad power mode {arg}")
        return 1
    if (root / "fake" / "reboot-required").exists() and entry["id"] != current_mode(root)["id"]:
        print("NVPM WARN: Golden image context is already created")
        print(f"NVPM WARN: Reboot required for changing to this power mode: {entry['id']}")
        print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:", flush=True)
        answer = sys.stdin.readline() if sys.stdin else ""
        if not answer:
            print("NVPM ERROR: bad input!")
            return 1
        print("NVPM ERROR: optMask is 1, no request for power mode")
        return 1
    if _marker(root, "ignore", "nvpmodel", "-m"):
        return 0
    set_mode(root, entry)
    return 0


# ---------------------------------------------------------------- jetson_clocks


def jetson_clocks_main(argv: list[str]) -> int:
    setup = _setup("jetson_clocks", argv)
    if isinstance(setup, int):
        return setup
    root, first = setup
    if os.geteuid() != 0:
        # The real script checks this after parsing its options, for every action.
        print(f"Error: Run this script({sys.argv[0]}) as a root user")
        return 1
    code = _misbehave(root, "jetson_clocks", first)
    if code is not None:
        return code
    node = gpu_node(root)
    if node is None:
        print("Error! No GPU found!")
        return 1
    conf = Path(argv[1]) if len(argv) >= 2 else Path(os.environ.get("HOME", "/root")) / ".jetsonclocks_conf.txt"
    if first == "--show":
        return _show(root, node)
    if first == "--store":
        return _store(node, conf)
    if first == "--restore":
        return _restore(node, conf)
    if first == "--fan":
        return 0
    if first != "lock":
        print(f"Unknown option: {first}", file=sys.stderr)
        return 1
    if _marker(root, "ignore", "jetson_clocks", "lock"):
        print("Error: Failed to max GPU frequency!")  # the real script still exits 0
        return 0
    (node / "device" / "railgate_enable").write_text("0\n")
    top = (node / "max_freq").read_text()
    (node / "min_freq").write_text(top)
    (node / "cur_freq").write_text(top)
    return 0


def _show(root: Path, node: Path) -> int:
    read = {k: (node / k).read_text().strip() for k in ("min_freq", "max_freq", "cur_freq")}
    print("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit")
    print("Online CPUs: 0-11")
    print("cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=2201600 "
          "IdleStates: WFI=1 c7=1 ")
    print(f"GPU MinFreq={read['min_freq']} MaxFreq={read['max_freq']} CurrentFreq={read['cur_freq']}")
    print("EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1")
    print(f"NV Power Mode: {current_mode(root)['name']}")
    return 0


def _store(node: Path, conf: Path) -> int:
    if conf.exists():
        print(f"File {conf} already exists. Can I overwrite it? Y/N:", flush=True)
        answer = (sys.stdin.readline() if sys.stdin else "").strip()
        if answer not in ("y", "Y"):
            print(f"Error: file {conf} already exists!")
            return 1
        conf.unlink()
    print(f"Storing system configuration in {conf}")
    with conf.open("a") as fh:
        for path in (node / "min_freq", node / "device" / "railgate_enable"):
            fh.write(f"{path}:{path.read_text().strip()}\n")
    return 0


def _restore(node: Path, conf: Path) -> int:
    if not conf.exists():
        print(f"Error: {conf} file not found !")
        return 1
    for line in conf.read_text().split():
        file, _, data = line.partition(":")
        try:
            Path(file).write_text(data + "\n")
        except OSError:
            print(f"Error: Failed to restore {file}")
    # The governor is free again: an idle GPU drops to its (restored) floor.
    (node / "cur_freq").write_text((node / "min_freq").read_text())
    return 0
