"""Test tiers: everything under tests/integration is marked ``integration`` (real servers);
run one tier alone with ``-m integration`` or ``-m "not integration"``."""

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
