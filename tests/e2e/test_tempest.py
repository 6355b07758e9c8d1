"""tempest.api.compute.admin.test_migrations against the running Ferry: every
test must pass (none skipped: two hosts, resize and cold migration enabled)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import ferryproc, tempest_run

pytestmark = [pytest.mark.e2e, pytest.mark.tempest]
pytest.importorskip("tempest", reason="tempest is not installed in this venv")
if not (ferryproc.BIN / "tempest").exists():
    pytest.skip("the tempest command is not in this venv", allow_module_level=True)

EXPECTED = {"test_cold_migration", "test_cold_migration_with_swap", "test_list_migrations",
            "test_list_migrations_in_flavor_resize_situation",
            "test_resize_server_revert_deleted_flavor", "test_revert_cold_migration"}


@pytest.mark.parametrize("enforce_scope", [False, True], ids=["admin", "project-manager"])
def test_tempest_migrations(ferry: ferryproc.FerryProcess, tmp_path: Path,
                            enforce_scope: bool) -> None:
    rc, output = tempest_run.run(ferry, tmp_path / "tempest", enforce_scope=enforce_scope)
    totals = tempest_run.summary(output)
    assert rc == 0, output[-5000:]
    assert totals["passed"] == len(EXPECTED) and totals["failed"] == 0, totals
    for name in EXPECTED:
        assert f"MigrationsAdminTest.{name} " in output and "... ok" in output, name
