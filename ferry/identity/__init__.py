"""Identity v3 (a Keystone subset): users, projects, domains, roles, tokens.

`store` holds the queries, `tokens` issues and validates tokens, `passwords`
hashes secrets, `bootstrap` makes the first admin and `<state-dir>/clouds.yaml`.
The HTTP side is in ferry/api/identity_*.py. To add an identity resource:
a table in ferry/db/identity_models.py (plus a migration), its queries here,
its routes in ferry/api/identity_admin.py, and its rule in ferry/policy/rules.py.
"""
