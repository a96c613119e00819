"""ishowttsd.clocks against the emulated nvpmodel / jetson_clocks and a fake sysfs tree.

The fake tools are found the way the real ones are: first on PATH.  They log every call to
the tree, print the real tools' formats and change the fake sysfs as the real ones change
/sys (tests/fakes/jetson/README.md).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ishowttsd import clocks
from ishowttsd.config import ClocksConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes" / "jetson"))
from fakejetson import FakeJetson

NO_SLEEP = {"sleep": lambda _s: None}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeJetson:
    jetson = FakeJetson.create(tmp_path / "jetson")
    for key, value in jetson.env().items():
        if key in ("PATH", "FAKE_JETSON_ROOT"):
            monkeypatch.setenv(key, value)
    return jetson


def config(fake: FakeJetson, **overrides: Any) -> ClocksConfig:
    return ClocksConfig(**fake.clocks_values(**overrides))


def text(outcome: clocks.Outcome) -> str:
    return "\n".join(outcome.lines)


# ------------------------------------------------------------------ applying: order and effect


def test_apply_runs_nvpmodel_before_jetson_clocks_and_verifies(fake: FakeJetson) -> None:
    outcome = clocks.apply_locks(config(fake), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_OK, text(outcome)
    assert fake.argvs()[:2] == [["nvpmodel", "-m", "0"], ["jetson_clocks"]]
    assert fake.argvs()[2:] == [["nvpmodel", "-q"]]  # verification reads, changes nothing
    assert fake.mode() == 0
    assert fake.gpu() == {"min_freq": 1300500000, "max_freq": 1300500000, "cur_freq": 1300500000, "railgate": 0}
    assert "clocks locked: power mode 0 (MAXN), GPU 1300.5 MHz" in text(outcome)
    assert outcome.state is not None and outcome.state.verified


def test_tools_get_no_terminal_and_c_locale(fake: FakeJetson) -> None:
    clocks.apply_locks(config(fake), **NO_SLEEP)
    for call in fake.calls():
        assert call["stdin_tty"] is False  # prompts read EOF instead of hanging the unit
        assert call["lc_all"] == "C"
        assert call["euid"] == 0


def test_power_mode_is_configurable(fake: FakeJetson) -> None:
    outcome = clocks.apply_locks(config(fake, power_mode=3), **NO_SLEEP)
    assert outcome.code == 0, text(outcome)
    assert fake.argvs()[0] == ["nvpmodel", "-m", "3"]
    assert fake.gpu()["min_freq"] == fake.gpu()["max_freq"] == 816000000


def test_the_order_matters_a_mode_change_unlocks(fake: FakeJetson) -> None:
    """Why nvpmodel goes first: run the other way round, the locks are gone."""
    cfg = config(fake, power_mode=0)
    assert clocks.run_tool(["jetson_clocks"], 10).ok
    assert clocks.run_tool(["nvpmodel", "-m", "0"], 10).ok
    state = clocks.read_state(cfg)
    assert state.locked is False and not state.verified


# ------------------------------------------------------------------ verification by reading


def test_read_state_locked(fake: FakeJetson) -> None:
    clocks.apply_locks(config(fake), **NO_SLEEP)
    state = clocks.read_state(config(fake))
    assert state.locked is True and state.verified and state.problems == ()
    data = state.as_dict()
    json.dumps(data)
    assert data["provider"] == "jetson" and data["power_mode"] == 0 and data["power_mode_name"] == "MAXN"
    assert data["gpu_freq_hz"] == 1300500000 and data["locked"] is True and data["gpu"] is None
    assert data["gpu_devfreq"].endswith("class/devfreq/17000000.ga10b")
    assert data["l4t_release"].startswith("# R35 (release), REVISION: 4.1")


def test_read_state_at_boot_is_unlocked(fake: FakeJetson) -> None:
    state = clocks.read_state(config(fake))
    assert state.locked is False
    assert state.power_mode == 2 and state.power_mode_name == "MODE_30W"
    assert any("not pinned: min 306 MHz != max 612 MHz" in p for p in state.problems)
    assert any("power mode is 2 (MODE_30W), but [clocks] power_mode = 0" in p for p in state.problems)


def test_pinned_in_the_wrong_power_mode_is_not_locked(fake: FakeJetson) -> None:
    assert clocks.run_tool(["jetson_clocks"], 10).ok  # pinned, but in mode 2
    state = clocks.read_state(config(fake, power_mode=0))
    assert state.locked is False
    assert state.problems == ("power mode is 2 (MODE_30W), but [clocks] power_mode = 0",)


def test_throttled_below_the_pin_is_not_locked(fake: FakeJetson) -> None:
    clocks.apply_locks(config(fake), **NO_SLEEP)
    node = fake.sys_root / "class" / "devfreq" / "17000000.ga10b"
    (node / "cur_freq").write_text("918000000\n")
    state = clocks.read_state(config(fake))
    assert state.locked is False
    assert "GPU runs at 918 MHz, below its pinned 1300.5 MHz" in state.problems[0]


def test_jetson_clocks_that_fails_silently_is_caught_by_verification(fake: FakeJetson) -> None:
    fake.mark("ignore", "jetson_clocks")  # like the real script: prints an error, exits 0
    naps: list[float] = []
    outcome = clocks.apply_locks(config(fake), sleep=naps.append)
    assert outcome.code == clocks.EXIT_FAILED
    assert "the locks did not take: GPU clock not pinned" in text(outcome)
    assert len(naps) == clocks.VERIFY_ATTEMPTS - 1


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("tool", "when", "expected_calls"),
    [
        ("nvpmodel", "-m", [["nvpmodel", "-m", "0"]]),
        ("jetson_clocks", "lock", [["nvpmodel", "-m", "0"], ["jetson_clocks"]]),
    ],
)
def test_a_tool_that_exits_1(fake: FakeJetson, tool: str, when: str, expected_calls: list[list[str]]) -> None:
    fake.mark("fail", tool, when)
    outcome = clocks.apply_locks(config(fake), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_FAILED
    assert fake.argvs() == expected_calls  # stops at the first failure, no verification
    assert f"FAILED: `{tool}" in text(outcome) and "exited 1: Error: fake" in text(outcome)
    assert "clocks NOT locked: continuing unlocked ([clocks] required = false)" in text(outcome)


def test_a_tool_that_hangs_is_killed_with_its_children(fake: FakeJetson) -> None:
    fake.mark("hang", "jetson_clocks", "lock")
    started = time.monotonic()
    # 3 s: long enough for the fake to start and record its pids on a loaded 2-core CI box.
    outcome = clocks.apply_locks(config(fake, timeout_s=3), **NO_SLEEP)
    assert time.monotonic() - started < 15
    assert outcome.code == clocks.EXIT_FAILED
    assert "`jetson_clocks` did not finish within 3 s and was killed" in text(outcome)
    for pid in map(int, (fake.root / "fake" / "hang-jetson_clocks.pid").read_text().split()):
        assert _gone(pid), f"process {pid} survived the timeout"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):  # killed, waiting for a reaper that may be slow in containers
            return True
        time.sleep(0.05)
    return False


def test_a_missing_tool(fake: FakeJetson) -> None:
    outcome = clocks.apply_locks(config(fake, nvpmodel="nvpmodel-not-installed"), **NO_SLEEP)
    assert outcome.code == clocks.EX_UNAVAILABLE
    assert "FAILED: nvpmodel-not-installed not found (PATH=" in text(outcome)
    assert fake.calls() == []


def test_not_root(fake: FakeJetson) -> None:
    outcome = clocks.apply_locks(config(fake), geteuid=lambda: 1000, **NO_SLEEP)
    assert outcome.code == clocks.EX_NOPERM
    assert "changing clocks needs root" in text(outcome)
    assert fake.calls() == []


@pytest.mark.parametrize("required", [False, True])
def test_required_changes_the_message_not_the_exit_code(fake: FakeJetson, required: bool) -> None:
    fake.mark("fail", "nvpmodel", "-m")
    outcome = clocks.apply_locks(config(fake, required=required), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_FAILED  # non-zero either way; the unit's `-` decides
    last = outcome.lines[-1]
    if required:
        assert last == "clocks NOT locked: ishowttsd will not start ([clocks] required = true)"
    else:
        assert "continuing unlocked ([clocks] required = false)" in last


def test_reboot_prompt_fails_fast_with_advice(fake: FakeJetson) -> None:
    fake.require_reboot()
    outcome = clocks.apply_locks(config(fake), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_FAILED
    assert "NVPM ERROR: bad input!" in text(outcome)
    assert "Power mode 0 needs a reboot: run `sudo nvpmodel -m 0`" in text(outcome)


def test_a_power_mode_the_module_lacks(fake: FakeJetson) -> None:
    outcome = clocks.apply_locks(config(fake, power_mode=9), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_FAILED
    assert "NVPM ERROR: request for bad power mode 9" in text(outcome)
    assert "no power mode 9: see `nvpmodel -p --verbose`" in text(outcome)


# ------------------------------------------------------------------ store and restore


def test_store_then_restore(fake: FakeJetson) -> None:
    cfg = config(fake, restore_on_stop=True)
    outcome = clocks.apply_locks(cfg, **NO_SLEEP)
    assert outcome.code == 0, text(outcome)
    store = str(fake.store_file)
    assert fake.argvs()[:3] == [["jetson_clocks", "--store", store], ["nvpmodel", "-m", "0"], ["jetson_clocks"]]
    assert "min_freq:306000000" in fake.store_file.read_text()  # the state before anything changed

    restored = clocks.restore_locks(cfg)
    assert restored.code == 0, text(restored)
    assert fake.argvs()[-1] == ["jetson_clocks", "--restore", store]
    assert fake.gpu()["min_freq"] == 306000000 and fake.gpu()["railgate"] == 1
    assert clocks.read_state(cfg).locked is False
    assert not fake.store_file.exists()  # the next start stores afresh

    again = clocks.restore_locks(cfg)
    assert again.code == 0 and "nothing to restore: no stored clock state" in text(again)


def test_an_existing_store_file_is_kept(fake: FakeJetson) -> None:
    cfg = config(fake, restore_on_stop=True)
    clocks.apply_locks(cfg, **NO_SLEEP)
    before = fake.store_file.read_text()
    outcome = clocks.apply_locks(cfg, **NO_SLEEP)  # a restart without a restore in between
    assert outcome.code == 0
    assert [a for a in fake.argvs() if a[:2] == ["jetson_clocks", "--store"]] == [
        ["jetson_clocks", "--store", str(fake.store_file)]
    ]
    assert fake.store_file.read_text() == before
    assert "keeping the prior clock state already stored" in text(outcome)


def test_store_failure_stops_before_changing_anything(fake: FakeJetson) -> None:
    fake.mark("fail", "jetson_clocks", "--store")
    outcome = clocks.apply_locks(config(fake, restore_on_stop=True), **NO_SLEEP)
    assert outcome.code == clocks.EXIT_FAILED
    assert fake.argvs() == [["jetson_clocks", "--store", str(fake.store_file)]]
    assert fake.mode() == 2


def test_restore_failure_keeps_the_store_file(fake: FakeJetson) -> None:
    cfg = config(fake, restore_on_stop=True)
    clocks.apply_locks(cfg, **NO_SLEEP)
    fake.mark("fail", "jetson_clocks", "--restore")
    outcome = clocks.restore_locks(cfg)
    assert outcome.code == clocks.EXIT_FAILED
    assert "kept for another try" in text(outcome)
    assert fake.store_file.exists()


def test_restore_is_a_no_op_without_restore_on_stop(fake: FakeJetson) -> None:
    outcome = clocks.restore_locks(config(fake, restore_on_stop=False))
    assert outcome.code == 0 and fake.calls() == []


def test_restore_needs_root(fake: FakeJetson) -> None:
    outcome = clocks.restore_locks(config(fake, restore_on_stop=True), geteuid=lambda: 1000)
    assert outcome.code == clocks.EX_NOPERM and fake.calls() == []


# ------------------------------------------------------------------ auto detection


def test_auto_finds_the_jetson(fake: FakeJetson) -> None:
    res = clocks.resolve_provider(config(fake, provider="auto"))
    assert res.provider == "jetson"
    assert res.nvpmodel is not None and res.nvpmodel.endswith("fakes/jetson/bin/nvpmodel")
    assert res.l4t_release is not None and res.l4t_release.startswith("# R35")


def test_auto_without_release_file_is_none(fake: FakeJetson) -> None:
    fake.release_file.unlink()
    cfg = config(fake, provider="auto")
    res = clocks.resolve_provider(cfg)
    assert res.provider == "none" and "nv_tegra_release not found (not a Jetson)" in res.reason
    outcome = clocks.apply_locks(cfg, **NO_SLEEP)
    assert outcome.code == 0 and "nothing to lock" in text(outcome)
    assert fake.calls() == []


def test_auto_without_tools_is_none(fake: FakeJetson, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    res = clocks.resolve_provider(config(fake, provider="auto"))
    assert res.provider == "none"
    assert res.reason.endswith("found but nvpmodel and jetson_clocks not on PATH")


def test_auto_with_required_and_no_jetson_fails(fake: FakeJetson) -> None:
    fake.release_file.unlink()
    outcome = clocks.apply_locks(config(fake, provider="auto", required=True), **NO_SLEEP)
    assert outcome.code == clocks.EX_UNAVAILABLE
    assert "ishowttsd will not start" in text(outcome)


def test_provider_none_changes_nothing(fake: FakeJetson) -> None:
    cfg = config(fake, provider="none", required=True)
    assert clocks.apply_locks(cfg, **NO_SLEEP).code == 0
    state = clocks.read_state(cfg, gpu_reader=lambda: None)
    assert state.provider == "none" and state.locked is None
    assert fake.calls() == []


# ------------------------------------------------------------------ finding the GPU devfreq node


@pytest.mark.parametrize("name", ["17000000.ga10b", "17000000.gpu", "17000000.gv11b", "17000000.gp10b", "57000000.gpu"])
def test_gpu_devfreq_found_by_name(tmp_path: Path, name: str) -> None:
    jetson = FakeJetson.create(tmp_path, devfreq_name=name)
    assert clocks.find_gpu_devfreq(jetson.sys_root) == jetson.sys_root / "class" / "devfreq" / name


def test_gpu_devfreq_found_by_compatible_when_the_name_is_new(tmp_path: Path) -> None:
    jetson = FakeJetson.create(tmp_path, devfreq_name="18000000.gpu", compatible="nvidia,ga10b")
    assert clocks.find_gpu_devfreq(jetson.sys_root) == jetson.sys_root / "class" / "devfreq" / "18000000.gpu"


def test_no_gpu_devfreq(tmp_path: Path) -> None:
    jetson = FakeJetson.create(tmp_path, devfreq_name="18000000.gpu", compatible="vendor,other")
    assert clocks.find_gpu_devfreq(jetson.sys_root) is None  # the vic decoy is never taken
    assert clocks.find_gpu_devfreq(tmp_path / "nowhere") is None


def test_missing_devfreq_makes_the_state_unknown(fake: FakeJetson) -> None:
    state = clocks.read_state(config(fake, sysfs_root=str(fake.root / "empty")))
    assert state.locked is None
    assert any(p.startswith("no GPU devfreq node under") for p in state.problems)
    assert "GPU clocks: UNKNOWN" in clocks.format_state(state)


# ------------------------------------------------------------------ parsing real output


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("NV Power Mode: MAXN\n0\n", ("MAXN", 0)),
        ("NV Power Mode: MODE_50W\n3\n", ("MODE_50W", 3)),
        # As non-root on an Orin NX (captured): the mode, then errors about root-only files.
        ("NV Power Mode: MAXN_SUPER\n0\nNVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13\n",
         ("MAXN_SUPER", 0)),
        ("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n", ("15W", 0)),
        ("NV Power Mode: 7W\n", ("7W", None)),
        ("", (None, None)),
    ],
)
def test_parse_nvpmodel_query(output: str, expected: tuple[str | None, int | None]) -> None:
    assert clocks.parse_nvpmodel_query(output) == expected


def test_non_root_nvpmodel_query_still_reads(fake: FakeJetson) -> None:
    real = clocks.run_tool(["nvpmodel", "-q"], 10)
    result = clocks.ToolResult(real.argv, 1, real.stdout + "NVPM ERROR: Error opening x: 13\n", "")
    state = clocks.read_state(config(fake), run=lambda argv, t: result)
    assert state.power_mode == 2


# ------------------------------------------------------------------ discrete GPUs (read only)


class FakeNvml:
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.shut = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetClockInfo(self, handle: str, kind: int) -> int:
        return 1755

    def nvmlDeviceGetMaxClockInfo(self, handle: str, kind: int) -> int:
        return 1980

    def nvmlDeviceGetTemperature(self, handle: str, kind: int) -> int:
        return 34

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        raise RuntimeError("Not Supported")


def test_gpu_context_from_nvml() -> None:
    nvml = FakeNvml()
    gpu = clocks.read_gpu_context(nvml_loader=lambda: nvml, nvidia_smi="no-such-nvidia-smi")
    assert gpu == clocks.GpuContext(
        source="nvml", name="NVIDIA H100 80GB HBM3", sm_clock_mhz=1755, max_sm_clock_mhz=1980,
        temperature_c=34, power_w=None,
    )
    assert nvml.shut


def test_gpu_context_falls_back_to_nvidia_smi(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 1980, 1980, 31, 71.23'\n")
    smi.chmod(0o755)
    gpu = clocks.read_gpu_context(nvml_loader=lambda: FakeNvml(fail_init=True), nvidia_smi=str(smi))
    assert gpu == clocks.GpuContext(
        source="nvidia-smi", index=0, name="NVIDIA H100 80GB HBM3", sm_clock_mhz=1980,
        max_sm_clock_mhz=1980, temperature_c=31, power_w=71.23,
    )


def test_gpu_context_none_without_nvml_or_nvidia_smi() -> None:
    assert clocks.read_gpu_context(nvml_loader=lambda: None, nvidia_smi="no-such-nvidia-smi") is None


def test_parse_nvidia_smi_not_supported_fields() -> None:
    gpu = clocks.parse_nvidia_smi("0, Orin (nvgpu), [N/A], [N/A], [N/A], [Not Supported]\n")
    assert gpu is not None and gpu.name == "Orin (nvgpu)" and gpu.sm_clock_mhz is None and gpu.power_w is None
    assert clocks.parse_nvidia_smi("garbage") is None


# ------------------------------------------------------------------ status output


def test_format_state_locked(fake: FakeJetson) -> None:
    clocks.apply_locks(config(fake), **NO_SLEEP)
    shown = clocks.format_state(clocks.read_state(config(fake)))
    assert shown.splitlines()[0] == "GPU clocks: LOCKED"
    assert "power mode   0 (MAXN), [clocks] power_mode = 0" in shown
    assert "GPU clock    1300.5 MHz (min 1300.5 MHz, max 1300.5 MHz, governor nvhost_podgov)" in shown
    assert "problems" not in shown and "re-apply" not in shown


def test_format_state_unlocked_says_why_and_what_to_do(fake: FakeJetson) -> None:
    shown = clocks.format_state(clocks.read_state(config(fake)))
    assert shown.splitlines()[0] == "GPU clocks: NOT LOCKED"
    assert "    - GPU clock not pinned: min 306 MHz != max 612 MHz" in shown
    assert "sudo systemctl restart ishowttsd" in shown


def test_format_state_discrete_gpu() -> None:
    gpu = clocks.GpuContext(source="nvml", name="NVIDIA H100 80GB HBM3", sm_clock_mhz=1755,
                            max_sm_clock_mhz=1980, temperature_c=34, power_w=71.2)
    state = clocks.ClockState(provider="none", configured_provider="none", reason="[clocks] provider = none",
                              gpu=gpu)
    shown = clocks.format_state(state)
    assert shown.splitlines()[0] == "GPU clocks: not managed (provider none)"
    assert "SM clock     1755 MHz of 1980 MHz max" in shown and "71.2 W" in shown and "34 °C" in shown
    assert "never changes a discrete GPU's clocks" in shown
    assert state.as_dict()["gpu"]["max_sm_clock_mhz"] == 1980
    assert clocks.summary(state) == (
        "clocks not managed (provider none); NVIDIA H100 80GB HBM3 SM 1755/1980 MHz (read only)"
    )


def test_format_state_no_gpu() -> None:
    state = clocks.ClockState(provider="none", configured_provider="auto", reason="auto: x not found")
    assert "no NVIDIA GPU readable" in clocks.format_state(state)


def test_summary(fake: FakeJetson) -> None:
    assert clocks.summary(clocks.read_state(config(fake))) == "UNLOCKED: jetson, power mode 2 (MODE_30W), GPU 306 MHz"


def test_cli_functions_print_to_the_stream(fake: FakeJetson) -> None:
    out = io.StringIO()
    assert clocks.cli_apply(config(fake), geteuid=lambda: 1000, stream=out) == clocks.EX_NOPERM
    assert out.getvalue().startswith("ishowttsd --apply-clocks: FAILED: changing clocks needs root")
    out = io.StringIO()
    assert clocks.cli_restore(config(fake), stream=out) == 0
    assert "ishowttsd --restore-clocks: nothing to restore" in out.getvalue()


def test_clocks_module_imports_no_torch() -> None:
    code = "import sys, ishowttsd.clocks; sys.exit(any(m in sys.modules for m in ('torch', 'f5_tts')))"
    assert os.system(f"{sys.executable} -c \"{code}\"") == 0
