"""oslo.policy's Enforcer with Ferry's defaults and an optional YAML override file.

The policy file (``--policy-file``, default ``<state-dir>/policy.yaml`` when it
exists) holds only the rules an operator changes, in oslo.policy syntax, e.g.::

    "os_compute_api:os-migrate-server:migrate:host": "rule:project_manager_or_admin"

oslo.policy re-reads the file when it changes, so edits apply without a
restart. Scope enforcement is off: Ferry issues project- and domain-scoped
tokens only, and the API refuses non-project tokens on compute/image calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import opts as oslo_opts
from oslo_policy import policy as oslo_policy

from ferry.policy.rules import ALL

log = logging.getLogger(__name__)


class Policy:
    def __init__(self, policy_file: Path | None = None) -> None:
        conf = cfg.ConfigOpts()
        # No command line or config files: everything comes from the arguments.
        conf([], project="ferry", default_config_files=[])
        oslo_opts.set_defaults(conf, enforce_scope=False, enforce_new_defaults=True)
        self.policy_file = policy_file
        # Always an absolute path: a relative one would be searched for in
        # /etc and the home directory. /dev/null reads as "no overrides".
        path = str(policy_file.resolve()) if policy_file else os.devnull
        self._enforcer = oslo_policy.Enforcer(conf, policy_file=path, use_conf=True)
        self._enforcer.register_defaults(ALL)
        if policy_file is not None and policy_file.exists():
            log.info("policy overrides from %s", policy_file)

    def allowed(self, rule: str, creds: Mapping[str, Any],
                target: Mapping[str, Any] | None = None) -> bool:
        # `authorize` (not `enforce`) so that a misspelt rule raises instead of
        # quietly falling back to a default rule.
        return bool(self._enforcer.authorize(rule, dict(target or {}), dict(creds),
                                             do_raise=False))

    def rules(self) -> dict[str, str]:
        """The effective rules (defaults plus overrides), for docs and tests."""
        self._enforcer.load_rules()
        return {name: str(rule) for name, rule in self._enforcer.rules.items()}
