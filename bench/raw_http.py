"""A bare HTTP/1.1 client for the benchmark: one kept-alive socket, requests written as bytes,
responses read with a few lines of parsing (Content-Length or chunked bodies).

Why: session 8's stage trace put half a millisecond between aiohttp's client posting and the
daemon reading, which looked like the client's own Python.  This client does almost nothing of
its own, so what it times is the daemon and the loopback.  Measured beside aiohttp's (rtf.py
reports both), the medians agree and its p95 is tighter: the time was not the client's
(bench/NOTES.md item 49).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit


class RawHttp:
    """One connection to ``host:port``, used for one request at a time."""

    def __init__(self, host: str, port: int, timeout_s: float = 600.0) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self.headers_at = 0.0

    @classmethod
    def for_url(cls, url: str) -> RawHttp:
        """A connection to the host and port of ``url`` (http://host:port...)."""
        where = urlsplit(url)
        return cls(where.hostname or "127.0.0.1", where.port or 80)

    def close(self) -> None:
        self.sock.close()

    def post_json(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[
            float, float, bytes]:
        """POST ``body`` as JSON: (seconds to the whole body, seconds to its first byte, body).
        Raises RuntimeError on a status other than 200."""
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        t0 = time.perf_counter()
        self.sock.sendall(request)
        status, fields = self._head()
        self.headers_at = time.perf_counter()  # for diag_http_stages.py's client marks
        first: float | None = None
        parts: list[bytes] = []
        if fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()  # the empty trailer
                    break
                first = first if first is not None else self._first_byte(t0)
                parts.append(self._exactly(size))
                self._line()
        else:
            length = int(fields.get("content-length", "0"))
            if length:
                first = self._first_byte(t0)
            parts.append(self._exactly(length))
        total = time.perf_counter() - t0
        data = b"".join(parts)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return total, first if first is not None else total, data

    def _first_byte(self, t0: float) -> float:
        """Seconds from ``t0`` until at least one body byte is here (it may be already)."""
        if not self._buf:
            self._fill()
        return time.perf_counter() - t0

    def _fill(self) -> None:
        got = self.sock.recv(1 << 20)
        if not got:
            raise ConnectionError("the server closed the connection")
        self._buf += got

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return status, fields
