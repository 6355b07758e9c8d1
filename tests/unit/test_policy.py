"""Ferry's policy defaults (Nova 32 for compute) and operator overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from oslo_policy.policy import PolicyNotRegistered

from ferry.api.context import RequestContext
from ferry.identity.store import expand
from ferry.policy.enforcer import Policy
from ferry.policy.rules import ALL

C = "os_compute_api:"


def ctx(role: str | None, project: str = "p1", policy: Policy | None = None) -> RequestContext:
    roles = sorted(expand({role})) if role else []
    return RequestContext(user_id="u", project_id=project, roles=roles, policy=policy)


MATRIX = [
    # rule, lowest role allowed on its own project
    (C + "os-migrate-server:migrate", "manager"),
    (C + "os-migrate-server:migrate:host", "admin"),
    (C + "servers:resize", "member"),
    (C + "servers:confirm_resize", "member"),
    (C + "servers:revert_resize", "member"),
    (C + "servers:start", "member"),
    (C + "servers:stop", "member"),
    (C + "servers:show", "reader"),
    (C + "os-migrations:index", "manager"),
    (C + "os-migrations:index:all_projects", "admin"),
    (C + "os-migrations:index:host", "admin"),
    (C + "os-extended-server-attributes", "admin"),
    (C + "servers:migrations:index", "manager"),
    (C + "servers:migrations:show", "admin"),
    ("ferry:migrations:index", "reader"),
]
ORDER = ["reader", "member", "manager", "admin"]


@pytest.mark.parametrize(("rule", "lowest"), MATRIX)
def test_nova_defaults_by_role(rule: str, lowest: str) -> None:
    for role in ORDER:
        allowed = ORDER.index(role) >= ORDER.index(lowest)
        assert ctx(role).can(rule, {"project_id": "p1"}) is allowed, (rule, role)
    assert not ctx(None).can(rule, {"project_id": "p1"})


@pytest.mark.parametrize(("rule", "lowest"), [m for m in MATRIX if m[1] != "admin"])
def test_project_roles_do_not_reach_other_projects(rule: str, lowest: str) -> None:
    assert not ctx("manager").can(rule, {"project_id": "p2"})
    assert ctx("admin").can(rule, {"project_id": "p2"})


def test_is_admin_is_the_context_is_admin_rule() -> None:
    assert ctx("admin").is_admin and not ctx("manager").is_admin


def test_unknown_rule_fails_loudly() -> None:
    with pytest.raises(PolicyNotRegistered):
        ctx("admin").can("os_compute_api:servers:migrate_typo")


def test_every_rule_is_registered_once() -> None:
    names = [r.name for r in ALL]
    assert len(names) == len(set(names))
    assert set(Policy().rules()) >= set(names)


def test_override_file_in_oslo_policy_syntax(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text('"os_compute_api:os-migrate-server:migrate:host": '
                 '"rule:project_manager_or_admin"\n'
                 '"os_compute_api:servers:stop": "!"\n')
    p = Policy(f)
    assert ctx("manager", policy=p).can(C + "os-migrate-server:migrate:host",
                                        {"project_id": "p1"})
    assert not ctx("admin", policy=p).can(C + "servers:stop", {"project_id": "p1"})
    # Unchanged rules keep their defaults.
    assert not ctx("member", policy=p).can(C + "os-migrate-server:migrate",
                                           {"project_id": "p1"})
    assert "manager" in p.rules()[C + "os-migrate-server:migrate:host"]


def test_missing_policy_file_means_defaults(tmp_path: Path) -> None:
    p = Policy(tmp_path / "absent.yaml")
    assert ctx("manager", policy=p).can(C + "os-migrate-server:migrate", {"project_id": "p1"})
