"""Fixtures live in tests/fixtures/, one module per component of the local stack."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.anvil",
    "tests.fixtures.tron",
]
