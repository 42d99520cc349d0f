"""The standalone fake against a real Python client: websockets' reconnecting client.

The client under test is a small price feed built on `websockets.sync.client.reconnect`:
it subscribes on every connection and reconnects after a drop, as a real one would.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
from typing import Any

import pytest
from websockets.client import process_exception
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect, reconnect

from fake_ws_server import ExpectationFailed, FakeWsServer

SUBSCRIBE = {"json_includes": {"type": "subscribe"}}


def quick_retries():
    """Reconnect after 50, 100, 200... ms (websockets' default starts at up to 5 s)."""
    return (min(0.05 * 2**n, 1.0) for n in itertools.count())


def retry_resets_too(exc: Exception) -> Exception | None:
    """websockets' own rule, plus: a connection reset during the handshake is worth
    retrying (a load balancer with no backend does that; see the test below)."""
    if isinstance(exc, ConnectionClosedError):
        return None
    return process_exception(exc)


class PriceFeed:
    """The client under test, on a thread of its own: on every connection it sends
    `subscribe`, then queues what the server sends; it reconnects after any drop."""

    def __init__(
        self, url: str, topic: str, *, retry_resets: bool = False, keepalive: float | None = None
    ):
        self.url = url
        self.topic = topic
        # Seconds between pings, and to wait for each pong; websockets' defaults: 20, 20.
        self._keepalive = (
            {"ping_interval": keepalive, "ping_timeout": keepalive, "close_timeout": keepalive}
            if keepalive is not None
            else {}
        )
        self._retryable = retry_resets_too if retry_resets else process_exception
        self.error: Exception | None = None  # what made it give up, if anything
        self.received: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._socket = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PriceFeed":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stopping.set()
        if self._socket is not None:
            self._socket.close()
        self.join()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), f"the price feed did not stop within {timeout} s"

    def next_message(self, timeout: float = 5.0) -> Any:
        return self.received.get(timeout=timeout)

    def _run(self) -> None:
        try:
            self._subscribe_on_every_connection()
        except Exception as error:  # noqa: BLE001 - kept for the test to read
            self.error = error

    def _retry(self, exc: Exception) -> Exception | None:
        """Retry as configured, until the test stops the feed."""
        return exc if self._stopping.is_set() else self._retryable(exc)

    def _subscribe_on_every_connection(self) -> None:
        for websocket in reconnect(
            self.url,
            proxy=None,
            reconnect_delays=quick_retries,
            process_exception=self._retry,
            open_timeout=5,
            **self._keepalive,
        ):
            self._socket = websocket
            if self._stopping.is_set():
                return
            try:
                websocket.send(json.dumps({"type": "subscribe", "topic": self.topic}))
                for raw in websocket:
                    self.received.put(json.loads(raw))
            except ConnectionClosed:
                pass
            if self._stopping.is_set():
                return


def test_reconnects_and_resubscribes_after_a_drop(fake_ws: FakeWsServer) -> None:
    fake_ws.mount_rule(
        {"match": SUBSCRIBE, "reply": [{"type": "subscribed", "topic": "{{/topic}}"}], "times": 2}
    )
    with PriceFeed(fake_ws.ws_url, "btc") as feed:
        first = fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed", "topic": "btc"}
        first.send({"type": "price", "topic": "btc", "cents": 4200})
        assert feed.next_message() == {"type": "price", "topic": "btc", "cents": 4200}

        first.abort()  # a reset, no close frame: what the client sees as 1006
        assert first.wait_closed()["how"] == "aborted"
        fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed", "topic": "btc"}

    outcomes = [a["outcome"] for a in fake_ws.wait_for_attempts(2)["attempts"]]
    assert outcomes == ["accepted", "accepted"]


def test_retries_while_the_server_is_down(fake_ws: FakeWsServer) -> None:
    fake_ws.mount_rule({"match": SUBSCRIBE, "reply": [{"type": "subscribed"}]})
    with PriceFeed(fake_ws.ws_url, "eth", retry_resets=True) as feed:
        fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed"}

        fake_ws.stop()  # resets the connection and refuses new ones
        attempts = fake_ws.wait_for_attempts(5)["attempts"]
        assert [a["outcome"] for a in attempts[1:5]] == ["refused"] * 4
        # The backoff, as the fake recorded it: 50, 100, 200 ms between the tries.
        at = [a["at_ms"] for a in attempts[1:5]]
        gaps = [later - earlier for earlier, later in zip(at, at[1:])]
        assert gaps[2] > 2 * gaps[0], f"no backoff between the tries: {gaps} ms"

        fake_ws.restart()
        fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed"}


def test_websockets_gives_up_on_a_reset_during_the_handshake(fake_ws: FakeWsServer) -> None:
    """What the fake found: websockets' `reconnect` retries a reset it sees as an
    OSError, but a reset that lands once the handshake is under way surfaces as
    ConnectionClosedError, which its default `process_exception` takes as fatal. Which
    one a try meets is a race, so against a server that keeps resetting (a load
    balancer with no healthy backend) the client retries a few times, then stops for
    good. `retry_resets_too` above is the fix."""
    fake_ws.mount_rule({"match": SUBSCRIBE, "reply": [{"type": "subscribed"}]})
    feed = PriceFeed(fake_ws.ws_url, "eth")
    with feed:
        fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed"}
        fake_ws.stop()
        feed.join(timeout=30)  # it gives up by itself
    assert isinstance(feed.error, ConnectionClosedError), repr(feed.error)
    outcomes = [a["outcome"] for a in fake_ws.wait_for_attempts(2)["attempts"]]
    assert outcomes[0] == "accepted" and set(outcomes[1:]) == {"refused"}, outcomes


def test_the_keepalive_finds_an_unplugged_cable_and_the_feed_reconnects(
    fake_ws: FakeWsServer,
) -> None:
    """With the cable unplugged the fake answers no ping and sends no FIN, so only the
    client's own keepalive can tell. websockets pings every 20 s and waits 20 s for
    the pong by default: a feed would sit on a dead link for 40 s. Here 0.2 s each."""
    fake_ws.mount_rule({"match": SUBSCRIBE, "reply": [{"type": "subscribed"}]})
    with PriceFeed(fake_ws.ws_url, "btc", keepalive=0.2) as feed:
        first = fake_ws.next_connection()
        assert feed.next_message() == {"type": "subscribed"}
        first.blackhole()
        second = fake_ws.next_connection(timeout=10)
        assert feed.next_message() == {"type": "subscribed"}
    assert second.id == 1
    outcomes = [a["outcome"] for a in fake_ws.wait_for_attempts(2)["attempts"]]
    assert outcomes == ["accepted", "accepted"]


def test_a_failed_expectation_shows_the_transcript(fake_ws: FakeWsServer) -> None:
    with PriceFeed(fake_ws.ws_url, "eth"):
        conn = fake_ws.next_connection()
        with pytest.raises(ExpectationFailed) as failure:
            conn.expect({"json_includes": {"type": "subscribe", "topic": "btc"}}, timeout=0.5)
        message = str(failure.value)
        assert "did not come" in message
        assert '-   "topic": "btc"' in message  # the diff against the closest message
        assert "transcript:" in message
        assert 'client → fake  text {"type": "subscribe", "topic": "eth"}' in message

        # Untaken, the message is what the drop check would fail the test for.
        problems = fake_ws.verify()
        assert len(problems) == 1 and "no expectation or rule looked at" in problems[0]
        conn.expect({"json_includes": {"topic": "eth"}})
    assert fake_ws.verify() == []


def test_a_client_that_trusts_the_fakes_root_talks_over_wss() -> None:
    with FakeWsServer.start(tls=True) as fake:
        assert fake.ws_url.startswith("wss://")
        fake.mount_rule({"match": SUBSCRIBE, "reply": [{"type": "subscribed"}]})
        with connect(fake.ws_url, ssl=fake.ssl_context(), proxy=None, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "subscribe", "topic": "btc"}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "subscribed"}
        fake.assert_verified()
