"""Governance: the tamper-evident audit chain, retention, GDPR requests (docs/audit.md).

The chain itself is pure and lives below this package, beside the SQL that writes it
(``store/chain.py``: canonical encoding, HMACs, the verifier; ``store/audit.py``); ``keys`` owns
the key file; ``log`` the writer ``Agent.audit`` goes through; ``retention`` and ``gdpr`` the two
admin concerns; ``service`` the operations, the daily purge and the start-up checks
(:class:`~fetchml_agent.governance.service.Governance`).
"""
