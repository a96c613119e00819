"""A small admin client: HTTP/1.1 + JSON over the daemon's Unix socket, stdlib only.

The CLI must answer in well under a second, so this module imports nothing heavier than
``http.client``: no aiohttp, no torch.  Every failure becomes an ``AdminError`` carrying the
``ishowtts-admin`` exit code that describes it (3 denied, 4 unreachable, 5 refused).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

DEFAULT_SOCKET = "/run/ishowtts/admin.sock"
SOCKET_ENV = "ISHOWTTS_ADMIN_SOCKET"
# Quick reads answer at once; a daemon that says nothing for this long is stuck.
DEFAULT_TIMEOUT_S = 30.0
# Reload loads a model, self-check runs a benchmark: no read timeout of our own (systemd's
# TimeoutStartSec bounds the timer's run, an operator has Ctrl-C).
LONG_TIMEOUT_S: float | None = None

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNREACHABLE = 4
EXIT_REFUSED = 5

NDJSON = "application/x-ndjson"


def resolve_socket(arg: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--socket``, then ``$ISHOWTTS_ADMIN_SOCKET``, then the packaged default."""
    env = os.environ if environ is None else environ
    return arg or env.get(SOCKET_ENV) or DEFAULT_SOCKET


class AdminError(Exception):
    """A failure phrased for the operator, with the exit code the CLI should use."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class NotReachable(AdminError):
    exit_code = EXIT_UNREACHABLE


class PermissionDenied(AdminError):
    exit_code = EXIT_DENIED


class Refused(AdminError):
    """A 4xx answer other than 403: a bad value, a conflict, an unknown route."""

    exit_code = EXIT_REFUSED


class DaemonBug(AdminError):
    """A 5xx answer or a malformed reply: by the house rules that is a bug in the daemon."""

    exit_code = EXIT_REFUSED


class UnixHTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` whose transport is an AF_UNIX stream socket."""

    def __init__(self, socket_path: str, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        # The host only fills the Host: header; curl --unix-socket sends "localhost" as well.
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connecting to a local socket is instant or fails at once; never wait long for it.
        sock.settimeout(5.0)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self.sock = sock


HINT = "is ishowttsd running? try: systemctl status ishowttsd"


def _connect_error(path: str, exc: OSError) -> AdminError:
    """Map a failure to connect to the CLI's exit codes, naming the socket."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"permission denied opening {path}: your user may not use the admin socket "
            "(join the socket's group, or use sudo)"
        )
    if exc.errno == errno.ENOENT:
        return NotReachable(f"daemon not reachable: {path} does not exist; {HINT}")
    if exc.errno == errno.ECONNREFUSED:
        return NotReachable(f"daemon not reachable: nothing is listening on {path}; {HINT}")
    return NotReachable(f"daemon not reachable at {path}: {exc.strerror or exc}; {HINT}")


def _error_from(status: int, body: bytes) -> AdminError:
    """Turn a non-2xx answer into the matching AdminError, keeping the daemon's own words."""
    code, message = "", body.decode("utf-8", "replace").strip()
    try:
        err = json.loads(body)["error"]
        code, message = str(err.get("code", "")), str(err.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    if status == 403:
        return PermissionDenied(f"permission denied: {message or 'the daemon refused your user'}",
                                code=code, status=status)
    if status >= 500:
        return DaemonBug(
            f"the daemon failed with HTTP {status} ({code or 'no code'}): {message or '(no message)'}\n"
            "This is a bug in ishowttsd; please report it with `journalctl -u ishowttsd`.",
            code=code, status=status,
        )
    return Refused(message or f"HTTP {status}", code=code, status=status)


class AdminClient:
    """One request per connection: the CLI makes one or two calls, so pooling buys nothing."""

    def __init__(self, socket_path: str, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    # ----- transport ---------------------------------------------------------------------------

    def _open(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float | None
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        conn = UnixHTTPConnection(self.socket_path, timeout)
        headers = {"Accept": f"application/json, {NDJSON}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise _connect_error(self.socket_path, exc) from exc
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._lost(exc) from exc
        if not 200 <= resp.status < 300:
            err = _error_from(resp.status, self._read(resp))
            conn.close()
            raise err
        return conn, resp

    def _lost(self, exc: BaseException) -> AdminError:
        if isinstance(exc, TimeoutError):
            return NotReachable(f"the daemon did not answer in time on {self.socket_path}; "
                                f"{HINT}")
        return NotReachable(f"lost the connection to the daemon on {self.socket_path} ({exc}); "
                            f"{HINT}")

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        try:
            return resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._lost(exc) from exc

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                timeout: float | None = -1.0) -> Any:
        """One JSON request and its JSON answer."""
        conn, resp = self._open(method, path, body, self.timeout if timeout == -1.0 else timeout)
        try:
            raw = self._read(resp)
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise DaemonBug(f"the daemon sent a reply that is not JSON: {raw[:200]!r}") from exc

    def stream(self, method: str, path: str, body: Mapping[str, Any] | None = None,
               timeout: float | None = LONG_TIMEOUT_S) -> Iterator[dict[str, Any]]:
        """NDJSON events as they arrive; a plain JSON answer is yielded as one event.

        An ``{"event": "error", "error": {...}}`` line (a failure after streaming began) is
        raised like the same error sent as a 4xx/5xx answer.
        """
        conn, resp = self._open(method, path, body, timeout)
        try:
            if NDJSON not in (resp.getheader("Content-Type") or ""):
                raw = self._read(resp)
                yield self._parse_line(raw)
                return
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise self._lost(exc) from exc
                if not line:
                    return
                if line.strip():
                    event = self._parse_line(line)
                    if event.get("event") == "error":
                        err = event.get("error") or {}
                        status = int(err.get("status", 500 if err.get("code") == "internal" else 409))
                        raise _error_from(status, json.dumps({"error": err}).encode())
                    yield event
        finally:
            conn.close()

    @staticmethod
    def _parse_line(raw: bytes) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise DaemonBug(f"the daemon sent a line that is not JSON: {raw[:200]!r}") from exc
        if not isinstance(value, dict):
            raise DaemonBug(f"the daemon sent JSON that is not an object: {raw[:200]!r}")
        return value

    # ----- routes ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/status"))

    def history(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/history")["versions"])

    def selfcheck_history(self, last: int | None = None) -> dict[str, Any]:
        query = f"?{urlencode({'last': last})}" if last is not None else ""
        return dict(self.request("GET", f"/v1/selfcheck/history{query}"))

    def clocks(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/clocks"))

    def set_nfe(self, nfe: int) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/nfe", {"nfe": nfe, "validate": False}))

    def set_nfe_validated(self, nfe: int) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/v1/nfe", {"nfe": nfe, "validate": True})

    def rollback(self, to: int | None) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/rollback", {"to": to}))

    def reload(self) -> dict[str, Any]:
        # Returns only when the reload finished (a model swap can take minutes).
        return dict(self.request("POST", "/v1/reload", {}, timeout=LONG_TIMEOUT_S))

    def selfcheck(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/v1/selfcheck", dict(params))

    def quality_samples(self, nfe: int, against: int) -> Iterator[dict[str, Any]]:
        return self.stream("POST", "/v1/quality-samples", {"nfe": nfe, "against": against})
