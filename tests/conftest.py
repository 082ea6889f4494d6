"""Fixtures live in tests/fixtures/, one module per component of the local stack.

Every async test runs in the session's event loop: the servers the fixtures start (PostgreSQL pools, the Tron
simulator) serve from that loop, and a test in another loop would hang on them.
"""

import pytest
from pytest_asyncio import is_async_test

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.anvil",
    "tests.fixtures.tron",
    "tests.fixtures.writer",
    "tests.fixtures.processes",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if is_async_test(item):
            item.add_marker(session_loop, append=False)
