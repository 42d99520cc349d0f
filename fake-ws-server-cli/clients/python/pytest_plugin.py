"""The pytest fixture `fake_ws`: a fresh standalone fake per test, verified after it.

Enable it in a conftest.py with `pytest_plugins = ["pytest_plugin"]` (this directory on
sys.path), or copy the fixture. After the test, the fixture asks the fake what its drop
check would report (`POST /verify`) and fails the test's teardown on any problem: a
message nobody looked at, a frame that was not a valid message, a rule short of its
`times`. Then it stops the process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fake_ws_server import FakeWsServer


@pytest.fixture
def fake_ws() -> Iterator[FakeWsServer]:
    fake = FakeWsServer.start()
    try:
        yield fake
        fake.assert_verified()
    finally:
        fake.close()
