"""compose-smoke's check of the fake-ws-server image: drive the container through the
Python helper (attached, not started) with a real websockets client.

    fake_ws_image_check.py WS_URL ADMIN_URL
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../fake-ws-server-cli/clients/python"))

from websockets.sync.client import connect  # noqa: E402

from fake_ws_server import FakeWsServer  # noqa: E402


def main(ws_url: str, admin_url: str) -> None:
    fake = FakeWsServer.attach(ws_url, admin_url)
    fake.mount_rule({"match": {"json_includes": {"type": "ping"}}, "reply": [{"type": "pong"}], "times": 1})
    with connect(ws_url, proxy=None, open_timeout=10) as client:
        conn = fake.next_connection(timeout=10)
        client.send(json.dumps({"type": "ping"}))
        assert json.loads(client.recv(timeout=10)) == {"type": "pong"}
        client.send(json.dumps({"type": "hello", "from": "compose-smoke"}))
        assert conn.expect({"json_includes": {"type": "hello"}})["from"] == "compose-smoke"
        conn.close(1000, "done")
        assert conn.wait_closed()["code"] == 1000
    fake.assert_verified()
    print("fake-ws-server image: a rule answered, expect took a message, verify found nothing")


if __name__ == "__main__":
    main(*sys.argv[1:3])
