"""Authorisation: Nova's current default rules, Glance/Keystone-like rules for
the image and identity APIs, and Ferry's own, enforced with oslo.policy.

`rules.py` lists every rule with its default; `enforcer.py` wraps
oslo.policy's Enforcer (operators override any rule in a YAML policy file in
oslo.policy syntax). To protect a new endpoint: add a `RuleDefault` to
`rules.py` and call `ctx.authorize("<rule>", target)` in its handler; an
unregistered rule name fails loudly (PolicyNotRegistered), never silently.
"""
