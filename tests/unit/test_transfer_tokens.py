from __future__ import annotations

from pathlib import Path

import pytest

from ferry.transfer import TokenRegistry, TransferGrant, TransferRefused, new_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _grant(token: str, migration: str = "m1", expires_at: float = 2000.0) -> TransferGrant:
    return TransferGrant(token, migration, Path("/nonexistent"), {"disk": 10}, expires_at)


def test_new_tokens_are_long_and_unique() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 43 for t in tokens)  # 32 bytes of base64


def test_consume_is_single_use() -> None:
    registry = TokenRegistry(clock=Clock())
    token = new_token()
    registry.expect(_grant(token))
    assert registry.consume(token, "m1").files == {"disk": 10}
    with pytest.raises(TransferRefused, match="already used"):
        registry.consume(token, "m1")


def test_wrong_expired_and_foreign_tokens_are_refused() -> None:
    clock = Clock()
    registry = TokenRegistry(clock=clock)
    good, old = new_token(), new_token()
    registry.expect(_grant(good))
    registry.expect(_grant(old, migration="m2", expires_at=1500.0))
    with pytest.raises(TransferRefused, match="unknown"):
        registry.consume(new_token(), "m1")
    with pytest.raises(TransferRefused, match="unknown"):
        registry.consume(good[:-1], "m1")
    with pytest.raises(TransferRefused, match="another migration"):
        registry.consume(good, "m2")
    # Presenting it for the wrong migration did not burn it.
    assert registry.consume(good, "m1").migration_uuid == "m1"
    clock.now = 1500.0
    with pytest.raises(TransferRefused, match="expired"):
        registry.consume(old, "m2")


def test_expired_grants_are_eventually_forgotten() -> None:
    clock = Clock()
    registry = TokenRegistry(clock=clock, retention=10.0)
    token = new_token()
    registry.expect(_grant(token, expires_at=1001.0))
    clock.now = 1012.0
    with pytest.raises(TransferRefused, match="unknown"):
        registry.consume(token, "m1")


def test_revoke_and_pending() -> None:
    registry = TokenRegistry(clock=Clock())
    a, b, c = new_token(), new_token(), new_token()
    registry.expect(_grant(a))
    registry.expect(_grant(b))
    registry.expect(_grant(c, migration="m2"))
    assert len(registry.pending()) == 3
    assert registry.revoke("m1") == 2
    with pytest.raises(TransferRefused, match="unknown"):
        registry.consume(a, "m1")
    assert [g.migration_uuid for g in registry.pending()] == ["m2"]


def test_duplicate_registration_and_bad_grants_are_rejected() -> None:
    registry = TokenRegistry(clock=Clock())
    token = new_token()
    registry.expect(_grant(token))
    with pytest.raises(ValueError):
        registry.expect(_grant(token))
    with pytest.raises(TransferRefused):
        TransferGrant(new_token(), "m1", Path("/x"), {"../evil": 1}, 2000.0)
    with pytest.raises(ValueError):
        TransferGrant(new_token(), "m1", Path("/x"), {"disk": -1}, 2000.0)


def test_open_allows_resume_until_complete() -> None:
    registry = TokenRegistry(clock=Clock())
    token = new_token()
    registry.expect(_grant(token))
    for _ in range(3):  # every retry of the same migration may use it
        assert registry.open(token, "m1").migration_uuid == "m1"
    with pytest.raises(TransferRefused, match="another migration"):
        registry.open(token, "m2")
    assert registry.is_active(token)
    registry.complete(token)
    assert not registry.is_active(token)
    with pytest.raises(TransferRefused, match="already used"):
        registry.open(token, "m1")


def test_registry_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state" / "grants.json"
    registry = TokenRegistry(clock=clock, path=path)
    live, done, revoked = new_token(), new_token(), new_token()
    registry.expect(_grant(live))
    registry.expect(_grant(done))
    registry.expect(_grant(revoked, migration="m9"))
    registry.complete(done)
    registry.revoke("m9")
    assert path.stat().st_mode & 0o777 == 0o600
    assert live not in path.read_text()  # only hashes of tokens are stored

    again = TokenRegistry(clock=clock, path=path)
    assert again.open(live, "m1").files == {"disk": 10}
    with pytest.raises(TransferRefused, match="already used"):
        again.open(done, "m1")
    with pytest.raises(TransferRefused, match="unknown"):
        again.open(revoked, "m9")
    with pytest.raises(TransferRefused, match="unknown"):
        again.open(new_token(), "m1")


def test_corrupt_registry_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "grants.json"
    path.write_text("{not json")
    registry = TokenRegistry(path=path)
    assert registry.pending() == []
    assert (tmp_path / "grants.json.corrupt").exists()


def test_revoke_tells_listeners() -> None:
    registry = TokenRegistry(clock=Clock())
    seen: list[str] = []
    registry.on_revoke(lambda g: seen.append(g.migration_uuid))
    registry.expect(_grant(new_token(), migration="m7"))
    assert registry.revoke("m7") == 1
    assert seen == ["m7"]
