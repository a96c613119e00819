"""End-to-end: build the .deb, boot a real systemd in a container, install it, drive it.

The checklist of issue 7, one test per item, in order (later steps build on earlier ones; the
module-scoped fixtures hold the container).  The container has only loopback networking, which
proves that installing and running the package downloads nothing.

Needs root and systemd-nspawn, nsenter, debootstrap, dpkg-buildpackage and dh_virtualenv
(`make test-deps` installs them); skips with the reason otherwise.

  ISHOWTTS_DEB=dist/ishowtts_0.1.0_amd64.deb   test this .deb instead of running `make deb`
  ISHOWTTS_TEST_CACHE=/var/cache/ishowtts-test  where the debootstrap root is cached
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nspawn_harness import Container, HarnessError, booted

REPO = Path(__file__).resolve().parents[2]
CONFIG = "/etc/ishowtts/ishowttsd.toml"
CONF_D = "/etc/ishowtts/conf.d"
HISTORY = "/var/lib/ishowtts/selfcheck.jsonl"
# The drop-in from the issue: its key names are part of the interface.
TEST_DROPIN = """\
[model]
architecture = "tiny"
weights = "untrained"
device = "cpu"
"""
# A short suite: on 2 shared CPU cores the full one would take most of the CI budget.
SELFCHECK_DROPIN = """\
[selfcheck]
repeats = 1
warmup = 0
texts_per_category = 1
"""
# CPU torch on 2 shared cores is up to 100x slower with 2 threads than with one.  Test-only:
# on a GPU box the thread count hardly matters, so the shipped unit leaves it alone.
SERVICE_DROPIN = """\
[Service]
Environment=OMP_NUM_THREADS=1
"""
# RTF thresholds are GPU numbers; the tiny untrained model on a CI CPU is far slower.  The
# shipped unit keeps the config's thresholds; the test overrides them the way README.Debian
# tells an operator to.
SELFCHECK_SERVICE_DROPIN = """\
[Service]
ExecStart=
ExecStart=/usr/bin/ishowtts-admin self-check --max-mean-rtf 1000 --max-rtf 1000 --max-cv 1000 --max-slowdown 1000
"""
# Output of earlier steps that later ones look at.
OUTPUT: dict[str, str] = {}
REQUIRED_TOOLS = ("systemd-nspawn", "nsenter", "debootstrap", "dpkg-buildpackage", "dh_virtualenv", "make")
START_TIMEOUT = 300.0

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(2400)]


# ---------------------------------------------------------------- fixtures (the shared state)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the .deb end-to-end test needs root (debootstrap, systemd-nspawn)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (make test-deps installs them)")
    path = Path(tempfile.mkdtemp(prefix="ishowtts-e2e-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(workdir: Path) -> Path:
    given = os.environ.get("ISHOWTTS_DEB")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"ISHOWTTS_DEB={given}: no such file"
        return path
    log = workdir / "make-deb.log"
    with log.open("w") as out:
        res = subprocess.run(
            ["make", "-C", str(REPO), "deb"], stdout=out, stderr=subprocess.STDOUT, timeout=1500, check=False
        )
    tail = log.read_text()[-4000:]
    assert res.returncode == 0, f"make deb failed ({res.returncode}):\n{tail}"
    debs = sorted((REPO / "dist").glob("ishowtts_*.deb"), key=lambda p: p.stat().st_mtime)
    assert debs, f"make deb made no dist/ishowtts_*.deb:\n{tail}"
    return debs[-1]


@pytest.fixture(scope="module")
def container(workdir: Path) -> Iterator[Container]:
    try:
        with booted("ishowtts-e2e", workdir, workdir / "debootstrap.log") as box:
            yield box
    except HarnessError as exc:
        pytest.fail(f"container harness: {exc}")


@pytest.fixture(scope="module")
def installed(container: Container, deb: Path) -> Container:
    shutil.copy(deb, container.rootfs / "root" / deb.name)
    res = container.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout=600, check=True, env=_apt_env())
    OUTPUT["apt install"] = res.stdout + res.stderr
    (container.rootfs / "root" / deb.name).unlink()
    return container


@pytest.fixture(scope="module")
def serving(installed: Container) -> Container:
    """The installed daemon switched to the tiny untrained CPU model and started."""
    box = installed
    box.write(f"{CONF_D}/test.toml", TEST_DROPIN)
    box.write(f"{CONF_D}/test-selfcheck.toml", SELFCHECK_DROPIN)
    box.write("/etc/systemd/system/ishowttsd.service.d/test.conf", SERVICE_DROPIN)
    box.write("/etc/systemd/system/ishowtts-selfcheck.service.d/test.conf", SELFCHECK_SERVICE_DROPIN)
    box.run(["systemctl", "daemon-reload"], check=True)
    box.run(["systemctl", "reset-failed", "ishowttsd.service"])
    start = box.run(["systemctl", "start", "ishowttsd.service"], timeout=START_TIMEOUT)
    assert start.returncode == 0, f"start failed: {start.stderr}\n{journal_tail(box)}"
    return box


# ---------------------------------------------------------------- helpers


def _apt_env() -> dict[str, str]:
    return {"DEBIAN_FRONTEND": "noninteractive"}


def show(box: Container, unit: str = "ishowttsd.service") -> dict[str, str]:
    props = "ActiveState,SubState,Result,ExecMainStatus,ExecMainCode,NRestarts,MainPID"
    res = box.run(["systemctl", "show", unit, f"--property={props}"], check=True)
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)


def journal_tail(box: Container, unit: str = "ishowttsd.service", lines: int = 40) -> str:
    res = box.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"])
    return f"--- journalctl -u {unit} (last {lines}) ---\n{res.stdout}{res.stderr}"


def wait_until(what: str, probe: Callable[[], bool], timeout: float, box: Container) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}\n{journal_tail(box)}")
        time.sleep(1.0)


def admin_status(box: Container) -> dict[str, object]:
    res = box.run(["ishowtts-admin", "status", "--json"], check=True)
    status = json.loads(res.stdout)
    assert isinstance(status, dict)
    return status


def assert_failed_with_78_and_no_loop(box: Container) -> None:
    """The unit failed with EX_CONFIG and systemd is not restarting it (RestartSec=5s)."""
    wait_until("ishowttsd.service to fail", lambda: show(box)["ActiveState"] == "failed", 120, box)
    state = show(box)
    assert state["ExecMainStatus"] == "78", f"{state}\n{journal_tail(box)}"
    restarts = state["NRestarts"]
    time.sleep(8)  # longer than RestartSec: a restart loop would have begun by now
    later = show(box)
    assert later["ActiveState"] == "failed", later
    assert later["NRestarts"] == restarts, f"restarted: {state} -> {later}"


def uid_gid(box: Container, user: str) -> tuple[int, int]:
    fields = box.run(["getent", "passwd", user], check=True).stdout.split(":")
    return int(fields[2]), int(fields[3])


# ---------------------------------------------------------------- the checklist, in order


def test_deb_builds(deb: Path) -> None:
    assert deb.stat().st_size > 0
    info = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Depends"], capture_output=True, text=True)
    assert "Package: ishowtts" in info.stdout


def test_container_boots(container: Container) -> None:
    assert container.run(["systemctl", "is-system-running"]).stdout.strip() in ("running", "degraded")
    # The private network: nothing but loopback, so nothing below can download.
    links = container.run(["cat", "/proc/net/dev"], check=True).stdout
    assert [line.split(":")[0].strip() for line in links.splitlines()[2:]] == ["lo"]


def test_apt_install_offline_succeeds(installed: Container) -> None:
    res = installed.run(["dpkg-query", "-W", "-f=${Status}", "ishowtts"], check=True)
    assert res.stdout == "install ok installed"
    for path in ("/usr/bin/ishowttsd", "/usr/bin/ishowtts-admin", CONFIG):
        installed.run(["test", "-e", path], check=True)
    conffiles = installed.run(["dpkg-query", "-W", "-f=${Conffiles}", "ishowtts"], check=True).stdout
    assert CONFIG in conffiles


def test_without_model_exits_78_and_does_not_loop(installed: Container) -> None:
    # apt install started it (and succeeded although the start failed): no model files yet.
    assert_failed_with_78_and_no_loop(installed)
    log = installed.run(["journalctl", "-u", "ishowttsd.service", "-o", "cat", "--no-pager"], check=True).stdout
    hints = [line for line in log.splitlines() if "--fetch-model --accept-license" in line]
    assert len(hints) == 1, f"want one line telling the operator what to do, got {hints}\n{log[-3000:]}"
    # ... and postinst repeats it where the operator is looking.
    assert "sudo ishowttsd --fetch-model --accept-license" in OUTPUT["apt install"], OUTPUT["apt install"]


def test_enabled_and_active(serving: Container) -> None:
    box = serving
    for unit in ("ishowttsd.service", "ishowtts-selfcheck.timer"):
        assert box.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled", unit
        assert box.run(["systemctl", "is-active", unit]).stdout.strip() == "active", unit
    # The oneshot is driven by its timer only: never enabled, not run by the install.
    assert box.run(["systemctl", "is-enabled", "ishowtts-selfcheck.service"]).stdout.strip() == "static"
    ready = box.run(["curl", "-sS", "--fail", "http://127.0.0.1:8080/readyz"], check=True)
    assert json.loads(ready.stdout)["status"] == "ready"


def test_speech_request(serving: Container) -> None:
    body = json.dumps({"model": "f5-tts", "input": "Hello from the package test.", "response_format": "wav"})
    serving.run(
        "curl -sS --fail -o /root/speech.wav -H 'Content-Type: application/json' "
        f"--data '{body}' http://127.0.0.1:8080/v1/audio/speech",
        timeout=180,
        check=True,
    )
    header = (serving.rootfs / "root/speech.wav").read_bytes()[:12]
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE", header


def test_runs_as_user_ishowtts(serving: Container) -> None:
    box = serving
    pid = show(box)["MainPID"]
    assert pid != "0"
    status = box.run(["cat", f"/proc/{pid}/status"], check=True).stdout
    fields = {k: v.split() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)}
    uid, gid = uid_gid(box, "ishowtts")
    assert fields["Uid"] == [str(uid)] * 4, fields["Uid"]
    assert fields["Gid"] == [str(gid)] * 4, fields["Gid"]
    groups = set(fields["Groups"])
    for group in ("video", "render"):
        gid_of = box.run(["getent", "group", group], check=True).stdout.split(":")[2]
        assert gid_of in groups, f"{group} ({gid_of}) not in {groups}"
    assert fields["NoNewPrivs"] == ["1"]


def test_set_nfe_survives_restart(serving: Container) -> None:
    box = serving
    status = admin_status(box)
    assert {"nfe", "settings_version"} <= status.keys(), status.keys()
    box.run(["ishowtts-admin", "set-nfe", "6"], check=True)
    assert admin_status(box)["nfe"] == 6
    restart = box.run(["systemctl", "restart", "ishowttsd.service"], timeout=START_TIMEOUT)
    assert restart.returncode == 0, f"{restart.stderr}\n{journal_tail(box)}"
    assert admin_status(box)["nfe"] == 6


def test_reload(serving: Container) -> None:
    box = serving
    pid = show(box)["MainPID"]
    res = box.run(["systemctl", "reload", "ishowttsd.service"], timeout=START_TIMEOUT)
    assert res.returncode == 0, f"{res.stderr}\n{journal_tail(box)}"
    assert box.run(["systemctl", "is-active", "ishowttsd.service"]).stdout.strip() == "active"
    assert show(box)["MainPID"] == pid, "reload must not restart the process"


def test_journal_holds_json_events(serving: Container) -> None:
    box = serving
    res = box.run(["journalctl", "-u", "ishowttsd.service", "-o", "json", "--no-pager"], check=True)
    uid, _ = uid_gid(box, "ishowtts")
    events: list[dict[str, object]] = []
    for line in res.stdout.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if not isinstance(message, str) or not message.startswith("{"):
            continue  # systemd's own lines ("Started ...") are not the daemon's
        event = json.loads(message)
        assert {"ts", "level", "event", "logger"} <= event.keys(), event
        assert entry.get("_UID") == str(uid), entry.get("_UID")
        events.append(event)
    names = {e["event"] for e in events}
    assert {"starting", "ready"} <= names, names


def test_timer_listed(serving: Container) -> None:
    res = serving.run(["systemctl", "list-timers", "--all", "--no-pager"], check=True)
    assert "ishowtts-selfcheck.timer" in res.stdout, res.stdout


def test_selfcheck_service_appends_history(serving: Container) -> None:
    box = serving

    def history_lines() -> int:
        res = box.run(["cat", HISTORY])
        return len(res.stdout.splitlines()) if res.returncode == 0 else 0

    before = history_lines()
    res = box.run(["systemctl", "start", "ishowtts-selfcheck.service"], timeout=900)
    assert res.returncode == 0, f"{res.stderr}\n{journal_tail(box, 'ishowtts-selfcheck.service')}"
    state = show(box, "ishowtts-selfcheck.service")
    assert state["Result"] == "success", state
    assert history_lines() == before + 1
    last = json.loads(box.run(["tail", "-n", "1", HISTORY], check=True).stdout)
    assert isinstance(last, dict)


def test_bad_config_fails_with_78_without_loop(serving: Container) -> None:
    box = serving
    box.write(f"{CONF_D}/zz-bad.toml", "[model]\nno_such_key = 1\n")
    try:
        res = box.run(["systemctl", "restart", "ishowttsd.service"], timeout=START_TIMEOUT)
        assert res.returncode != 0, "restart with a bad config must fail"
        assert_failed_with_78_and_no_loop(box)
        log = box.run(["journalctl", "-u", "ishowttsd.service", "-n", "30", "-o", "cat"]).stdout
        assert "no_such_key" in log, log
    finally:
        box.run(["rm", "-f", f"{CONF_D}/zz-bad.toml"])
        box.run(["systemctl", "reset-failed", "ishowttsd.service"])
        start = box.run(["systemctl", "start", "ishowttsd.service"], timeout=START_TIMEOUT)
    assert start.returncode == 0, f"start after fixing the config failed\n{journal_tail(box)}"


def test_kill_9_brings_a_restart(serving: Container) -> None:
    box = serving
    before = show(box)
    box.run(f"kill -9 {before['MainPID']}", check=True)  # the shell builtin: minbase has no procps

    def restarted() -> bool:
        now = show(box)
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

    wait_until("ishowttsd.service to come back after kill -9", restarted, START_TIMEOUT, box)
    assert int(show(box)["NRestarts"]) == int(before["NRestarts"]) + 1


INSTANCE_CONFIG = """\
[daemon]
state_dir = "/var/lib/ishowtts-gpu1"
runtime_dir = "/run/ishowtts-gpu1"
cache_dir = "/var/cache/ishowtts-gpu1"
[admin]
socket = "/run/ishowtts-gpu1/admin.sock"
[http]
listen = "127.0.0.1:8081"
"""


def test_template_instance_beside_the_service(serving: Container) -> None:
    # ishowttsd@gpu1 with its own config, socket, port and directories, next to ishowttsd.
    box = serving
    box.write("/etc/ishowtts/gpu1/ishowttsd.toml", INSTANCE_CONFIG)
    box.write("/etc/ishowtts/gpu1/conf.d/test.toml", TEST_DROPIN)
    box.write("/etc/systemd/system/ishowttsd@.service.d/test.conf", SERVICE_DROPIN)
    box.run(["systemctl", "daemon-reload"], check=True)
    sock = "/run/ishowtts-gpu1/admin.sock"
    try:
        start = box.run(["systemctl", "start", "ishowttsd@gpu1.service"], timeout=START_TIMEOUT)
        assert start.returncode == 0, journal_tail(box, "ishowttsd@gpu1.service")
        res = box.run(["ishowtts-admin", "--socket", sock, "status", "--json"], check=True)
        status = json.loads(res.stdout)
        assert "/etc/ishowtts/gpu1/ishowttsd.toml" in status["config_files"], status["config_files"]
        box.run(["curl", "-sS", "--fail", "http://127.0.0.1:8081/readyz"], check=True)
        reload = box.run(["systemctl", "reload", "ishowttsd@gpu1.service"], timeout=START_TIMEOUT)
        assert reload.returncode == 0, journal_tail(box, "ishowttsd@gpu1.service")
    finally:
        box.run(["systemctl", "stop", "ishowttsd@gpu1.service"], timeout=START_TIMEOUT)
    # Stopping the instance removed its runtime directory, not the main daemon's.
    assert box.run(["test", "-e", sock]).returncode == 1
    assert box.run(["systemctl", "is-active", "ishowttsd.service"]).stdout.strip() == "active"
    box.run(["test", "-S", "/run/ishowtts/admin.sock"], check=True)


def test_purge_removes_user(installed: Container) -> None:
    box = installed
    # What the test added; an operator's own drop-ins would stay behind (README.Debian).
    box.run(["rm", "-rf", f"{CONF_D}/test.toml", f"{CONF_D}/test-selfcheck.toml"], check=True)
    box.run("rm -rf /etc/ishowtts/gpu1 /etc/systemd/system/ishowtt*.service.d", check=True)
    box.run(["apt-get", "purge", "-y", "ishowtts"], timeout=300, check=True, env=_apt_env())
    for db, name in (("passwd", "ishowtts"), ("group", "ishowtts"), ("group", "ishowtts-admin")):
        assert box.run(["getent", db, name]).returncode == 2, f"{db} {name} still there"
    for path in (
        "/var/lib/ishowtts",
        "/var/lib/ishowtts-gpu1",
        "/var/cache/ishowtts",
        "/var/log/ishowtts",
        "/etc/ishowtts",
        "/opt/venvs/ishowtts",
    ):
        assert box.run(["test", "-e", path]).returncode == 1, f"{path} still there"
    units = box.run(["systemctl", "list-unit-files", "ishowttsd.service", "ishowtts-selfcheck.timer", "--no-legend"])
    assert units.stdout.strip() == "", units.stdout
