"""GPU clock locks: apply them as root, verify them by reading, report them everywhere.

On a Jetson, speed depends on clock state (the seed measured RTF 0.278 ±1.5% locked and
0.352 ±16% unlocked), and the locks are lost on every reboot.  So `ishowttsd --apply-clocks`
runs as root before every start (the unit's ``ExecStartPre=+``): it sets the power mode with
``nvpmodel -m N``, then pins the clocks with ``jetson_clocks``, then reads sysfs back to check
that they took.  Reading needs no root, so the unprivileged daemon, ``ishowtts-admin`` and
the self-check report the live state through :func:`read_state`.

Providers (``[clocks] provider``):

* ``jetson``: ``nvpmodel`` + ``jetson_clocks``;
* ``none``: change nothing.  On a discrete NVIDIA GPU the state carries read-only context
  (SM clock, temperature, power) from NVML or ``nvidia-smi``; ishowttsd never changes a
  discrete GPU's clocks, least of all a shared data-centre one;
* ``auto``: ``jetson`` when the release file exists and both tools are on PATH, else ``none``.

Every path (sysfs root, tools, release file, store file) comes from the config, and the
"am I root" check is a parameter, so tests point all of it at a fake tree.  This module
imports neither torch nor f5_tts: ``ishowtts-admin clocks`` must answer at once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ishowttsd.config import ClocksConfig

EXIT_OK = 0
EXIT_FAILED = 1  # a tool failed or timed out, or the locks did not verify
EX_UNAVAILABLE = 69  # sysexits: a tool or the GPU devfreq node is missing
EX_NOPERM = 77  # sysexits: not root

# Reads must not stall `ishowtts-admin status`; a healthy `nvpmodel -q` answers in milliseconds.
QUERY_TIMEOUT_S = 5.0
# After jetson_clocks writes min_freq, devfreq moves cur_freq on its next update: allow a moment.
VERIFY_ATTEMPTS = 5
VERIFY_INTERVAL_S = 0.2

# GPU devfreq device names, most likely first.  Found by name (then by compatible string),
# never by a hard-coded path: the address and the driver's naming differ between modules
# and L4T releases.  Sources for each are in tests/fakes/jetson/README.md.
GPU_DEVFREQ_NAMES = (
    "17000000.ga10b",  # Orin (AGX, NX, Nano), L4T R35 / JetPack 5
    "17000000.gpu",  # Orin, L4T R36 / JetPack 6 (out-of-tree nvgpu)
    "17000000.gv11b",  # Xavier (AGX, NX)
    "17000000.gp10b",  # TX2
    "57000000.gpu",  # Nano, TX1
    "gpu.0",  # older L4T (host1x gpu.0)
)
# What NVIDIA's own jetson_clocks matches in device/of_node/compatible (L4T R35).
GPU_COMPATIBLES = ("nvidia,ga10b", "nvidia,gv11b", "nvidia,gp10b")

UNLOCKED_CONSEQUENCE = (
    "continuing unlocked ([clocks] required = false): speed will vary from run to run; "
    "`ishowtts-admin clocks` shows the live state"
)
REQUIRED_CONSEQUENCE = "ishowttsd will not start ([clocks] required = true)"


# --------------------------------------------------------------------------- running tools


@dataclass(frozen=True)
class ToolResult:
    """What one run of an external tool did."""

    argv: tuple[str, ...]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    timeout_s: float = 0.0
    error: str | None = None  # the OSError text when it could not be started at all

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    @property
    def command(self) -> str:
        return " ".join([Path(self.argv[0]).name, *self.argv[1:]])

    def describe(self) -> str:
        """One line for an operator: what went wrong and the tool's last words."""
        if self.error is not None:
            return f"`{self.command}` could not be started: {self.error}"
        if self.timed_out:
            return f"`{self.command}` did not finish within {self.timeout_s:g} s and was killed"
        tail = _tail(self.stderr) or _tail(self.stdout)
        said = f": {tail}" if tail else " (no output)"
        return f"`{self.command}` exited {self.returncode}{said}"


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


Runner = Callable[[Sequence[str], float], ToolResult]


def run_tool(argv: Sequence[str], timeout_s: float) -> ToolResult:
    """Run a tool with no stdin, capture its output, and kill its whole group on timeout.

    stdin is /dev/null because both tools can prompt: ``nvpmodel -m`` asks "DO YOU WANT TO
    REBOOT NOW?" for some mode changes and ``jetson_clocks --store`` asks before overwriting.
    With /dev/null they read EOF and fail at once instead of hanging the unit's start.
    jetson_clocks is a shell script whose children keep the pipes open, so on timeout the
    whole session is killed, not just the direct child (else communicate() would wait on them).
    """
    args = tuple(str(a) for a in argv)
    env = dict(os.environ, LC_ALL="C")  # the parsers below read English output
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return ToolResult(args, error=exc.strerror or str(exc))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return ToolResult(args, proc.returncode, out, err, timed_out=True, timeout_s=timeout_s)
    return ToolResult(args, proc.returncode, out, err, timeout_s=timeout_s)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


# --------------------------------------------------------------------------- reading state


@dataclass(frozen=True)
class GpuContext:
    """Read-only facts about a discrete NVIDIA GPU (never changed by ishowttsd)."""

    source: str  # "nvml" or "nvidia-smi"
    index: int = 0
    name: str | None = None
    sm_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class Resolution:
    """Which provider applies, why, and where its tools are."""

    provider: str  # "jetson" or "none"
    reason: str
    nvpmodel: str | None = None
    jetson_clocks: str | None = None
    l4t_release: str | None = None


@dataclass(frozen=True)
class ClockState:
    """The live clock state, read without root.  ``locked`` is None when it cannot be known."""

    provider: str
    configured_provider: str
    reason: str
    required: bool = False
    l4t_release: str | None = None
    power_mode: int | None = None
    power_mode_name: str | None = None
    expected_power_mode: int | None = None
    gpu_devfreq: str | None = None
    gpu_freq_hz: int | None = None
    gpu_min_freq_hz: int | None = None
    gpu_max_freq_hz: int | None = None
    gpu_governor: str | None = None
    locked: bool | None = None
    problems: tuple[str, ...] = ()
    gpu: GpuContext | None = None

    @property
    def verified(self) -> bool:
        """Locked, in the power mode the config asks for: what --apply-clocks must reach."""
        return (
            self.locked is True
            and self.power_mode is not None
            and self.power_mode == self.expected_power_mode
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["problems"] = list(self.problems)
        return data


def resolve_provider(cfg: ClocksConfig) -> Resolution:
    """Turn ``[clocks] provider`` (auto, jetson, none) into the provider that applies."""
    release = _first_line(Path(cfg.release_file))
    nvpmodel = shutil.which(cfg.nvpmodel)
    jetson_clocks = shutil.which(cfg.jetson_clocks)
    tools = {"nvpmodel": nvpmodel, "jetson_clocks": jetson_clocks}
    if cfg.provider in ("none", "jetson"):
        return Resolution(cfg.provider, f"[clocks] provider = {cfg.provider}", nvpmodel, jetson_clocks, release)
    if release is None:
        return Resolution("none", f"auto: {cfg.release_file} not found (not a Jetson)")
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        reason = f"auto: {cfg.release_file} found but {' and '.join(missing)} not on PATH"
        return Resolution("none", reason, nvpmodel, jetson_clocks, release)
    reason = f"auto: {cfg.release_file} found; nvpmodel and jetson_clocks on PATH"
    return Resolution("jetson", reason, nvpmodel, jetson_clocks, release)


def _first_line(path: Path) -> str | None:
    """The release file's first line, '' when it exists but cannot be read, None when absent."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return "" if path.exists() else None


def read_state(
    cfg: ClocksConfig,
    *,
    run: Runner = run_tool,
    gpu_reader: Callable[[], GpuContext | None] | None = None,
) -> ClockState:
    """Read the live clock state.  Needs no root; never changes anything."""
    res = resolve_provider(cfg)
    base = ClockState(
        provider=res.provider,
        configured_provider=cfg.provider,
        reason=res.reason,
        required=cfg.required,
        l4t_release=res.l4t_release,
    )
    if res.provider == "none":
        reader = gpu_reader or (lambda: read_gpu_context(run=run))
        return dataclasses.replace(base, gpu=reader())
    return _read_jetson(cfg, res, base, run)


def _read_jetson(cfg: ClocksConfig, res: Resolution, base: ClockState, run: Runner) -> ClockState:
    problems: list[str] = []
    mode, name = None, None
    if res.nvpmodel is None:
        problems.append(f"{cfg.nvpmodel} not found on PATH: cannot read the power mode")
    else:
        result = run([res.nvpmodel, "-q"], min(cfg.timeout_s, QUERY_TIMEOUT_S))
        # Parse even on a non-zero exit: as non-root, nvpmodel -q prints the mode and then
        # NVPM ERROR lines about files only root may open.
        name, mode = parse_nvpmodel_query(result.stdout)
        if mode is None:
            problems.append(f"could not read the power mode: {result.describe()}")
    node = find_gpu_devfreq(Path(cfg.sysfs_root))
    freqs = read_devfreq(node) if node is not None else {}
    if node is None:
        problems.append(
            f"no GPU devfreq node under {Path(cfg.sysfs_root) / 'class' / 'devfreq'} "
            f"(looked for {', '.join(GPU_DEVFREQ_NAMES)})"
        )
    locked = _judge(mode, name, cfg.power_mode, freqs, problems)
    return dataclasses.replace(
        base,
        power_mode=mode,
        power_mode_name=name,
        expected_power_mode=cfg.power_mode,
        gpu_devfreq=str(node) if node is not None else None,
        gpu_freq_hz=freqs.get("cur_freq"),
        gpu_min_freq_hz=freqs.get("min_freq"),
        gpu_max_freq_hz=freqs.get("max_freq"),
        gpu_governor=_read_text(node / "governor") if node is not None else None,
        locked=locked,
        problems=tuple(problems),
    )


def _judge(
    mode: int | None, name: str | None, expected: int, freqs: dict[str, int], problems: list[str]
) -> bool | None:
    """Locked means min == max == cur on the GPU devfreq, in the configured power mode."""
    lo, hi, cur = freqs.get("min_freq"), freqs.get("max_freq"), freqs.get("cur_freq")
    if lo is None or hi is None or cur is None:
        if freqs:
            problems.append("GPU devfreq min_freq, max_freq or cur_freq unreadable")
        return None
    pinned = lo == hi == cur
    if lo != hi:
        problems.append(f"GPU clock not pinned: min {mhz(lo)} != max {mhz(hi)} (jetson_clocks sets min = max)")
    elif cur != hi:
        problems.append(f"GPU runs at {mhz(cur)}, below its pinned {mhz(hi)} (thermal or power capping?)")
    if mode is not None and mode != expected:
        problems.append(f"power mode is {mode} ({name}), but [clocks] power_mode = {expected}")
        return False
    return pinned


def parse_nvpmodel_query(text: str) -> tuple[str | None, int | None]:
    """``nvpmodel -q``: a line ``NV Power Mode: MAXN`` and the mode number on the next line.

    Other lines (``NVPM WARN``/``NVPM ERROR``) may come before or after; they are ignored.
    """
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            name = line.partition(":")[2].strip() or None
            following = next((x for x in lines[i + 1 :] if x), "")
            return name, int(following) if following.isdigit() else None
    return None, None


def find_gpu_devfreq(sysfs_root: Path) -> Path | None:
    """The GPU's devfreq node under <sysfs_root>/class/devfreq, by device name or compatible."""
    base = sysfs_root / "class" / "devfreq"
    for name in GPU_DEVFREQ_NAMES:
        if (base / name).is_dir():
            return base / name
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return None
    for entry in entries:
        compatible = _read_text(entry / "device" / "of_node" / "compatible", keep_nul=True) or ""
        if any(c in GPU_COMPATIBLES for c in compatible.split("\0")):
            return entry
    return None


def read_devfreq(node: Path) -> dict[str, int]:
    """min_freq, max_freq and cur_freq in Hz (world-readable in sysfs); missing ones left out."""
    freqs: dict[str, int] = {}
    for key in ("min_freq", "max_freq", "cur_freq"):
        text = _read_text(node / key)
        if text is not None and text.isdigit():
            freqs[key] = int(text)
    return freqs


def _read_text(path: Path, *, keep_nul: bool = False) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.strip() if keep_nul else text.replace("\0", "").strip()


def mhz(hz: int | None) -> str:
    return "?" if hz is None else f"{hz / 1e6:g} MHz"


# --------------------------------------------------------------------------- discrete GPUs


def _import_pynvml() -> Any | None:
    """pynvml (from nvidia-ml-py) if installed: imported lazily, it is an optional extra."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return pynvml


def read_gpu_context(
    *,
    nvml_loader: Callable[[], Any | None] = _import_pynvml,
    nvidia_smi: str = "nvidia-smi",
    run: Runner = run_tool,
    timeout_s: float = QUERY_TIMEOUT_S,
) -> GpuContext | None:
    """SM clock, max SM clock, temperature and power of GPU 0, or None without NVML/nvidia-smi."""
    nvml = nvml_loader()
    if nvml is not None:
        try:
            return _read_nvml(nvml)
        except Exception:  # NVMLError has many subclasses; fall back to nvidia-smi
            pass
    smi = shutil.which(nvidia_smi)
    if smi is None:
        return None
    query = "index,name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw"
    result = run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"], timeout_s)
    return parse_nvidia_smi(result.stdout) if result.ok else None


def _read_nvml(nvml: Any) -> GpuContext:
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)

        def get(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception:  # NVMLError_NotSupported and friends: leave it empty
                return None

        name = get(lambda: nvml.nvmlDeviceGetName(handle))
        milliwatts = get(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        return GpuContext(
            source="nvml",
            name=name.decode() if isinstance(name, bytes) else name,
            sm_clock_mhz=get(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            max_sm_clock_mhz=get(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
            temperature_c=get(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            power_w=None if milliwatts is None else round(milliwatts / 1000.0, 1),
        )
    finally:
        nvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> GpuContext | None:
    """First line of ``--query-gpu=index,name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw``
    with ``--format=csv,noheader,nounits``; ``[N/A]`` and ``[Not Supported]`` become None."""
    line = next((x for x in text.splitlines() if x.strip()), "")
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 6:
        return None
    # A GPU name could hold a comma: the five numeric fields are the first one and the last four.
    index, name, rest = parts[0], ", ".join(parts[1:-4]), parts[-4:]
    sm, max_sm, temp, power = (_number(p) for p in rest)
    return GpuContext(
        source="nvidia-smi",
        index=int(index) if index.isdigit() else 0,
        name=name or None,
        sm_clock_mhz=None if sm is None else int(sm),
        max_sm_clock_mhz=None if max_sm is None else int(max_sm),
        temperature_c=None if temp is None else int(temp),
        power_w=power,
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- applying


@dataclass
class Outcome:
    """What --apply-clocks or --restore-clocks did: an exit code and lines for the operator."""

    code: int = EXIT_OK
    lines: list[str] = field(default_factory=list)
    state: ClockState | None = None


def apply_locks(
    cfg: ClocksConfig,
    *,
    geteuid: Callable[[], int] = os.geteuid,
    run: Runner = run_tool,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Store the prior state (restore_on_stop), set the power mode, pin the clocks, verify.

    The order is deliberate: a power-mode change resets the clocks, so nvpmodel comes first.
    """
    res = resolve_provider(cfg)
    if res.provider == "none":
        return _nothing_to_lock(cfg, res)
    if geteuid() != 0:
        return _failed(cfg, EX_NOPERM, "changing clocks needs root (the unit's ExecStartPre=+ runs "
                       "this as root; by hand: sudo ishowttsd --apply-clocks --config PATH)")
    missing = _missing_tools(cfg, res)
    if missing:
        return _failed(cfg, EX_UNAVAILABLE, missing)
    assert res.nvpmodel is not None and res.jetson_clocks is not None
    out = Outcome()
    if cfg.restore_on_stop:
        failure = _store(cfg, res.jetson_clocks, run, out)
        if failure is not None:
            return failure
    for argv in ([res.nvpmodel, "-m", str(cfg.power_mode)], [res.jetson_clocks]):
        result = run(argv, cfg.timeout_s)
        if not result.ok:
            return _failed(cfg, EXIT_FAILED, result.describe() + _hint(result, cfg), out.lines)
    return _verify(cfg, run, sleep, out)


def _nothing_to_lock(cfg: ClocksConfig, res: Resolution) -> Outcome:
    if cfg.provider == "auto" and cfg.required:
        return _failed(cfg, EX_UNAVAILABLE, f"no Jetson clocks to lock ({res.reason})")
    return Outcome(EXIT_OK, [f"nothing to lock ({res.reason}); GPU clocks left as they are"])


def _missing_tools(cfg: ClocksConfig, res: Resolution) -> str | None:
    names = [(cfg.nvpmodel, res.nvpmodel), (cfg.jetson_clocks, res.jetson_clocks)]
    missing = [name for name, found in names if found is None]
    if not missing:
        return None
    path = os.environ.get("PATH", os.defpath)
    return f"{' and '.join(missing)} not found (PATH={path}); is this a Jetson with L4T installed?"


def _store(cfg: ClocksConfig, jetson_clocks: str, run: Runner, out: Outcome) -> Outcome | None:
    """``jetson_clocks --store`` before anything changes, so that --restore-clocks can undo it.

    An existing store file is kept: it holds the state from before ishowttsd first locked
    (a later --store would record the locked clocks).  --restore-clocks removes it.
    """
    store = Path(cfg.store_file)
    if store.exists():
        out.lines.append(f"keeping the prior clock state already stored in {store}")
        return None
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _failed(cfg, EXIT_FAILED, f"cannot create {store.parent} for the store file: {exc}")
    result = run([jetson_clocks, "--store", str(store)], cfg.timeout_s)
    if not result.ok:
        return _failed(cfg, EXIT_FAILED, result.describe(), out.lines)
    out.lines.append(f"stored the prior clock state in {store}")
    return None


def _hint(result: ToolResult, cfg: ClocksConfig) -> str:
    text = result.stdout + result.stderr
    if "Reboot required" in text or "REBOOT" in text:
        return (
            f". Power mode {cfg.power_mode} needs a reboot: run `sudo nvpmodel -m {cfg.power_mode}`, "
            "answer YES, and the next start locks the clocks"
        )
    if "bad power mode" in text:
        return f". This module has no power mode {cfg.power_mode}: see `nvpmodel -p --verbose`"
    return ""


def _verify(cfg: ClocksConfig, run: Runner, sleep: Callable[[float], None], out: Outcome) -> Outcome:
    state = read_state(cfg, run=run)
    for _ in range(VERIFY_ATTEMPTS - 1):
        if state.verified:
            break
        sleep(VERIFY_INTERVAL_S)
        state = read_state(cfg, run=run)
    if not state.verified:
        why = "; ".join(state.problems) or "state unknown"
        failed = _failed(cfg, EXIT_FAILED, f"the locks did not take: {why}", out.lines)
        failed.state = state
        return failed
    out.lines.append(
        f"clocks locked: power mode {state.power_mode} ({state.power_mode_name}), "
        f"GPU {mhz(state.gpu_freq_hz)} (min = max = cur)"
    )
    out.state = state
    return out


def _failed(cfg: ClocksConfig, code: int, message: str, before: Sequence[str] = ()) -> Outcome:
    consequence = REQUIRED_CONSEQUENCE if cfg.required else UNLOCKED_CONSEQUENCE
    return Outcome(code, [*before, f"FAILED: {message}", f"clocks NOT locked: {consequence}"])


def restore_locks(
    cfg: ClocksConfig,
    *,
    geteuid: Callable[[], int] = os.geteuid,
    run: Runner = run_tool,
) -> Outcome:
    """``jetson_clocks --restore`` the state stored by apply, then forget it.

    The power mode is left as it is: changing it back may need a reboot, and the
    restored clock floors are what lets the governor scale down again.
    """
    if not cfg.restore_on_stop:
        return Outcome(EXIT_OK, ["nothing to restore ([clocks] restore_on_stop = false)"])
    res = resolve_provider(cfg)
    if res.provider == "none":
        return Outcome(EXIT_OK, [f"nothing to restore ({res.reason})"])
    if geteuid() != 0:
        return Outcome(EX_NOPERM, ["FAILED: restoring clocks needs root (the unit's ExecStopPost=+ "
                                   "runs this as root)"])
    store = Path(cfg.store_file)
    if not store.exists():
        return Outcome(EXIT_OK, [f"nothing to restore: no stored clock state in {store}"])
    if res.jetson_clocks is None:
        return Outcome(EX_UNAVAILABLE, [f"FAILED: {cfg.jetson_clocks} not found on PATH"])
    result = run([res.jetson_clocks, "--restore", str(store)], cfg.timeout_s)
    if not result.ok:
        return Outcome(EXIT_FAILED, [f"FAILED: {result.describe()}; {store} kept for another try"])
    store.unlink(missing_ok=True)  # the next start stores the then-current state afresh
    return Outcome(EXIT_OK, [f"restored the clock state stored in {store} (power mode left as it is)"])


def cli_apply(cfg: ClocksConfig, *, geteuid: Callable[[], int] = os.geteuid, stream: TextIO | None = None) -> int:
    """``ishowttsd --apply-clocks``: apply, print what happened to stderr, return the exit code."""
    return _print(apply_locks(cfg, geteuid=geteuid), "--apply-clocks", stream)


def cli_restore(cfg: ClocksConfig, *, geteuid: Callable[[], int] = os.geteuid, stream: TextIO | None = None) -> int:
    """``ishowttsd --restore-clocks``: restore what apply stored; messages to stderr."""
    return _print(restore_locks(cfg, geteuid=geteuid), "--restore-clocks", stream)


def _print(outcome: Outcome, what: str, stream: TextIO | None) -> int:
    out = stream if stream is not None else sys.stderr
    for line in outcome.lines:
        print(f"ishowttsd {what}: {line}", file=out)
    return outcome.code


# --------------------------------------------------------------------------- reporting


def summary(state: ClockState) -> str:
    """One line for `ishowtts-admin status` and self-check records."""
    if state.provider == "none":
        gpu = state.gpu
        extra = f"; {gpu.name} SM {gpu.sm_clock_mhz}/{gpu.max_sm_clock_mhz} MHz (read only)" if gpu else ""
        return f"clocks not managed (provider none){extra}"
    verdict = {True: "locked", False: "UNLOCKED", None: "lock state unknown"}[state.locked]
    return f"{verdict}: jetson, power mode {_mode(state)}, GPU {mhz(state.gpu_freq_hz)}"


def _mode(state: ClockState) -> str:
    if state.power_mode is None:
        return "?"
    return f"{state.power_mode} ({state.power_mode_name})" if state.power_mode_name else str(state.power_mode)


def format_state(state: ClockState) -> str:
    """The detailed view printed by `ishowtts-admin clocks`."""
    if state.provider == "none":
        return _format_none(state)
    headline = {True: "LOCKED", False: "NOT LOCKED", None: "UNKNOWN"}[state.locked]
    rows = [
        ("provider", f"jetson ({state.reason})"),
        ("L4T release", state.l4t_release or "?"),
        ("power mode", f"{_mode(state)}, [clocks] power_mode = {state.expected_power_mode}"),
        ("GPU clock", f"{mhz(state.gpu_freq_hz)} (min {mhz(state.gpu_min_freq_hz)}, "
                      f"max {mhz(state.gpu_max_freq_hz)}, governor {state.gpu_governor or '?'})"),
        ("GPU devfreq", state.gpu_devfreq or "not found"),
    ]
    lines = [f"GPU clocks: {headline}", *_rows(rows)]
    if state.problems:
        lines.append("  problems:")
        lines.extend(f"    - {p}" for p in state.problems)
    if state.locked is not True:
        lines.append("  to re-apply: sudo systemctl restart ishowttsd (runs ishowttsd --apply-clocks as root),")
        lines.append("  then see why in: journalctl -u ishowttsd -b | grep apply-clocks")
    return "\n".join(lines)


def _format_none(state: ClockState) -> str:
    lines = ["GPU clocks: not managed (provider none)", *_rows([("provider", f"none ({state.reason})")])]
    gpu = state.gpu
    if gpu is None:
        lines.append("  no NVIDIA GPU readable through NVML or nvidia-smi")
        return "\n".join(lines)
    power = "?" if gpu.power_w is None else f"{gpu.power_w:g} W"
    temp = "?" if gpu.temperature_c is None else f"{gpu.temperature_c} °C"
    rows = [
        ("GPU", f"{gpu.name or '?'} (GPU {gpu.index}, read via {gpu.source})"),
        ("SM clock", f"{gpu.sm_clock_mhz if gpu.sm_clock_mhz is not None else '?'} MHz "
                     f"of {gpu.max_sm_clock_mhz if gpu.max_sm_clock_mhz is not None else '?'} MHz max"),
        ("temperature", temp),
        ("power draw", power),
    ]
    lines.extend(_rows(rows))
    lines.append("  ishowttsd never changes a discrete GPU's clocks.")
    return "\n".join(lines)


def _rows(rows: Sequence[tuple[str, str]]) -> list[str]:
    return [f"  {label:<12} {value}" for label, value in rows]
