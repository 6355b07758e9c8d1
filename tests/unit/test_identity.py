"""Identity building blocks: password hashing, token hashing, role
implication, the catalog, and clouds.yaml."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from ferry.identity import passwords
from ferry.identity.bootstrap import write_clouds_yaml
from ferry.identity.store import expand
from ferry.identity.tokens import catalog, token_hash


def test_password_hash_is_salted_slow_and_verifies() -> None:
    a, b = passwords.hash_password("pw"), passwords.hash_password("pw")
    # Not "pw" in a: two base64 characters match it by chance in 1 hash of ~60.
    secret = "correct-horse-battery"
    assert a != b and secret not in passwords.hash_password(secret)
    scheme, n, r, _p, _salt, _digest = a.split("$")
    assert scheme == "scrypt" and int(n) >= 2 ** 14 and int(r) == 8
    assert passwords.verify(a, "pw") and passwords.verify(b, "pw")
    assert not passwords.verify(a, "pW") and not passwords.verify(a, "")
    assert not passwords.verify("", "pw") and not passwords.verify("md5$x", "pw")
    passwords.burn("pw")  # the decoy check runs without a user


def test_tokens_are_stored_as_sha256() -> None:
    h = token_hash("tok")
    assert len(h) == 64 and h != token_hash("tok2") and "tok" not in h


def test_role_implication_chain() -> None:
    assert expand({"admin"}) == {"admin", "manager", "member", "reader"}
    assert expand({"manager"}) == {"manager", "member", "reader"}
    assert expand({"member"}) == {"member", "reader"}
    assert expand({"reader"}) == {"reader"}
    assert expand({"custom"}) == {"custom"}


def test_catalog_has_three_services_three_interfaces() -> None:
    cat = catalog("http://h:1/")
    urls = {c["type"]: {e["url"] for e in c["endpoints"]} for c in cat}  # type: ignore
    assert urls == {"compute": {"http://h:1/compute/v2.1"}, "image": {"http://h:1/image"},
                    "identity": {"http://h:1/identity/v3"}}
    assert catalog("http://h:1") == cat  # ids are stable


def test_clouds_yaml_created_0600_and_updated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    write_clouds_yaml(path, "http://127.0.0.1:1", "pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = yaml.safe_load(path.read_text())
    data["clouds"]["other"] = {"auth": {"auth_url": "x"}}
    path.write_text(yaml.safe_dump(data))
    write_clouds_yaml(path, "http://127.0.0.1:2", None)
    data = yaml.safe_load(path.read_text())
    assert data["clouds"]["other"] == {"auth": {"auth_url": "x"}}
    auth = data["clouds"]["ferry"]["auth"]
    assert auth["auth_url"] == "http://127.0.0.1:2/identity/v3" and auth["password"] == "pw"
