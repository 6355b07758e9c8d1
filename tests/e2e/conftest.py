"""Client end-to-end tests against a running `ferry up` (fake driver, two hosts,
password auth through the generated clouds.yaml). One Ferry per session.

They need python-openstackclient and openstacksdk in the venv (and tempest
for test_tempest.py); without them they are skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import ferryproc


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs openstack clients, runs `ferry up`")
    config.addinivalue_line("markers", "tempest: runs tempest against `ferry up`")


@pytest.fixture(scope="session")
def ferry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ferryproc.FerryProcess]:
    state = tmp_path_factory.mktemp("ferry-e2e") / "state"
    fp = ferryproc.start(state)
    yield fp
    fp.stop()
