"""Drive the standalone fake-ws-server from Python tests.

Starts the `fake-ws-server` binary on free ports, reads the URLs from its ready line,
and wraps its admin HTTP API. Standard library only: the admin API is plain HTTP and
JSON.

    from fake_ws_server import FakeWsServer

    with FakeWsServer.start() as fake:          # binary from $FAKE_WS_SERVER_BIN or PATH
        client = connect(fake.ws_url)             # the client under test
        conn = fake.next_connection()
        conn.expect({"json_includes": {"type": "subscribe"}})
        conn.send({"type": "subscribed"})
    # leaving the block verifies, as the Rust drop check does, then stops the server

With pytest, the `fake_ws` fixture (see `pytest_plugin.py`) does the same per test.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["FakeWsServer", "Connection", "FakeWsError", "ExpectationFailed"]

# How long start() waits for the ready line, and how much longer than a wait's own
# deadline an HTTP call may take before the helper gives up on the server.
READY_TIMEOUT = 30.0
HTTP_SLACK = 5.0


class FakeWsError(Exception):
    """The admin API refused a request; the message is the server's own."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ExpectationFailed(AssertionError):
    """An expectation did not hold; the message is the fake's, transcript included."""


class FakeWsServer:
    """One running fake: its WebSocket URL, its admin URL, and the admin calls."""

    def __init__(self, process: subprocess.Popen | None, ready: dict[str, Any]):
        self._process = process
        self.ws_url: str = ready["ws_url"]
        self.admin_url: str = ready["admin_url"].rstrip("/")
        # With tls=True: the root the wss:// certificate is signed by (PEM).
        self.root_certificate_pem: str | None = ready.get("root_certificate_pem")
        # stderr is drained so the server never blocks on a full pipe; kept for errors.
        self._stderr: list[str] = []
        if process is not None:
            threading.Thread(target=self._read_stderr, daemon=True).start()

    @classmethod
    def attach(cls, ws_url: str, admin_url: str) -> "FakeWsServer":
        """Drive a fake that runs elsewhere (the Docker image, in a compose file next
        to the service under test); `close()` then leaves it running."""
        return cls(None, {"ws_url": ws_url, "admin_url": admin_url})

    @classmethod
    def start(
        cls,
        *,
        scenario: str | os.PathLike | None = None,
        binary: str | None = None,
        args: list[str] | None = None,
        tls: bool = False,
    ) -> "FakeWsServer":
        """Start the binary on free ports and wait for its ready line; with `tls`, it
        serves wss:// and `ssl_context()` trusts its certificate."""
        binary = binary or os.environ.get("FAKE_WS_SERVER_BIN") or shutil.which("fake-ws-server")
        if not binary:
            raise FileNotFoundError(
                "fake-ws-server not found: set FAKE_WS_SERVER_BIN or put it on PATH "
                "(cargo build -p fake-ws-server-cli builds target/debug/fake-ws-server)"
            )
        command = [binary, "--port", "0", "--admin-port", "0", *(args or [])]
        if scenario is not None:
            command += ["--scenario", os.fspath(scenario)]
        if tls:
            command.append("--tls")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return cls(process, _read_ready_line(process, command))

    # --- the server -----------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this fake's wss:// certificate (for 127.0.0.1
        and localhost) and nothing else."""
        if self.root_certificate_pem is None:
            raise FakeWsError(0, "this fake serves plain ws://: start it with tls=True")
        return ssl.create_default_context(cadata=self.root_certificate_pem)

    def url_for(self, path: str) -> str:
        """The WebSocket URL of another path on this fake."""
        parts = urllib.parse.urlsplit(self.ws_url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    def mount_rule(self, rule: dict[str, Any]) -> int:
        """Mount a rule (the scenario file's shape); returns its id."""
        return self._call("POST", "/rules", rule)["id"]

    def mount_handshake_rule(self, rule: dict[str, Any]) -> int:
        return self._call("POST", "/handshake-rules", rule)["id"]

    def next_connection(self, timeout: float = 5.0) -> "Connection":
        """The next connection not yet handed out, waiting up to `timeout` seconds."""
        found = self._call("POST", "/connections/next", timeout=timeout)
        return Connection(self, found)

    def connections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/connections")

    def attempts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/attempts")["attempts"]

    def wait_for_attempts(self, count: int, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until `count` attempts were recorded since the start (accepted ones
        count): `{"attempts": [...], "log": "..."}`. An attempt is recorded a moment
        after the client sees its outcome, so wait rather than read `attempts()`."""
        return self._call("POST", "/attempts/wait", timeout=timeout, query={"count": count})

    def allow(self, matcher: Any) -> None:
        """Messages matching `matcher` never count as unlooked-at, on every connection."""
        self._call("POST", "/allow", {"match": matcher})

    def broadcast(self, message: Any) -> int:
        """Send a JSON message to every open connection; returns how many got it."""
        return self._call("POST", "/broadcast", {"json": message})["written"]

    def refuse(self) -> None:
        """New connections are reset before the handshake (recorded as `refused`)."""
        self._call("POST", "/server/refuse")

    def accept(self) -> None:
        """Answer handshakes again, after `refuse` or `hang`."""
        self._call("POST", "/server/accept")

    def reset(self) -> None:
        """Reset every live connection; new ones are accepted."""
        self._call("POST", "/server/reset")

    def hang(self) -> None:
        self._call("POST", "/server/hang")

    def stop(self) -> None:
        """Refuse and reset: the fake is down, the port stays bound."""
        self._call("POST", "/server/stop")

    def restart(self) -> None:
        self._call("POST", "/server/restart")

    def verify(self) -> list[str]:
        """What the drop check would report; empty when all is well."""
        return self._call("POST", "/verify")["problems"]

    def assert_verified(self) -> None:
        problems = self.verify()
        if problems:
            raise ExpectationFailed("the fake found problems:\n" + "\n".join(problems))

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s); nothing for `attach`."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> "FakeWsServer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.assert_verified()
        finally:
            self.close()

    # --- plumbing -------------------------------------------------------------------

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)
            del self._stderr[:-200]  # the last 200 lines are enough to explain a failure

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.admin_url + path
        params = dict(query or {})
        if timeout is not None:
            params["timeout_ms"] = int(timeout * 1000)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("content-type", "application/json")
        wait = (timeout or 0) + HTTP_SLACK
        try:
            with urllib.request.urlopen(request, timeout=wait) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise _error_of(error) from None
        except urllib.error.URLError as error:
            exited = "" if self._process is None else f" (exit code {self._process.poll()})"
            log = "".join(self._stderr[-20:])
            raise FakeWsError(
                0, f"the admin API at {self.admin_url} did not answer{exited}: {error.reason}\n{log}"
            ) from None
        return json.loads(raw) if raw else None


class Connection:
    """The fake's side of one client connection, by its id."""

    def __init__(self, server: FakeWsServer, info: dict[str, Any]):
        self._server = server
        self.info = info
        self.id: int = info["id"]

    def expect(self, matcher: Any, timeout: float = 5.0) -> Any:
        """The first message not yet taken that matches; fails with the transcript."""
        return self._take("/expect", {"match": matcher}, timeout)

    def expect_next(self, matcher: Any, timeout: float = 5.0) -> Any:
        """The next message not yet taken, which must match."""
        return self._take("/expect", {"match": matcher, "next": True}, timeout)

    def recv(self, timeout: float = 5.0) -> Any:
        """The next message not yet taken, whatever it is; None once the connection
        ended and nothing is left."""
        return self._take("/messages/next", None, timeout)

    def send(self, message: Any = None, *, text: str | None = None) -> None:
        """Send a JSON message (or raw text) to the client."""
        body = {"text": text} if text is not None else {"json": message}
        self._post("/send", body)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._post("/close", {"code": code, "reason": reason})

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees 1006)."""
        self._post("/abort")

    def stall(self) -> None:
        """Stop reading: no answers, no pongs."""
        self._post("/stall")

    def resume(self) -> None:
        self._post("/resume")

    def impair(
        self, latency: float = 0.0, jitter: float = 0.0, bytes_per_sec: int | None = None
    ) -> None:
        """Slow the link down, both ways: each byte waits `latency` seconds plus up to
        `jitter` more, at most `bytes_per_sec` go through a second."""
        body: dict[str, Any] = {
            "latency_ms": round(latency * 1000),
            "jitter_ms": round(jitter * 1000),
        }
        if bytes_per_sec is not None:
            body["bytes_per_sec"] = bytes_per_sec
        self._post("/impair", body)

    def clear_impairment(self) -> None:
        self._post("/clear-impairment")

    def blackhole(self) -> None:
        """Unplug the cable: nothing passes either way, nothing says so, until heal()."""
        self._post("/blackhole")

    def heal(self) -> None:
        """Plug it back in: what was held both ways goes on, in order."""
        self._post("/heal")

    def send_fault(self, fault: str, **fields: Any) -> None:
        """Send a frame RFC 6455 forbids: "invalid_utf8", "reserved_bits",
        "masked_frame", "oversized_control", "fragmented_control",
        "truncated_then_reset", "close_code" (with code=...) or "raw" (base64=...)."""
        self._post("/fault", {"fault": fault, **fields})

    def wait_closed(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the connection ended: `{"how", "code", "reason"}`."""
        path = f"/connections/{self.id}/wait-closed"
        return self._server._call("POST", path, timeout=timeout)

    def transcript(self) -> str:
        """Every frame so far, one a line, as failure messages show it."""
        return self._server._call("GET", f"/connections/{self.id}/transcript")["rendered"]

    def _take(self, route: str, body: Any, timeout: float) -> Any:
        path = f"/connections/{self.id}{route}"
        try:
            return self._server._call("POST", path, body, timeout=timeout)["message"]
        except FakeWsError as error:
            if error.status in (408, 409):
                raise ExpectationFailed(str(error)) from None
            raise

    def _post(self, route: str, body: Any = None) -> None:
        # Every connection route takes a JSON body; `{}` when there is nothing to say.
        body = {} if body is None else body
        self._server._call("POST", f"/connections/{self.id}{route}", body)


def _read_ready_line(process: subprocess.Popen, command: list[str]) -> dict[str, Any]:
    """The JSON line the binary prints once it serves, within READY_TIMEOUT."""
    result: dict[str, Any] = {}

    def read() -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line:
            result["line"] = line

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT)
    if "line" not in result:
        process.kill()
        _, err = process.communicate(timeout=5)
        raise RuntimeError(
            f"{' '.join(command)} printed no ready line within {READY_TIMEOUT:.0f} s "
            f"(exit code {process.returncode}); stderr:\n{err}"
        )
    return json.loads(result["line"])


def _error_of(error: urllib.error.HTTPError) -> FakeWsError:
    raw = error.read().decode(errors="replace")
    try:
        message = json.loads(raw).get("error", raw)
    except ValueError:
        message = raw
    return FakeWsError(error.code, message)
