"""Governance: the tamper-evident audit chain, retention, GDPR requests (docs/audit.md).

``chain`` is pure (canonical encoding, HMACs, the verifier); ``keys`` owns the key file;
``store/audit.py`` holds the SQL; ``retention`` and ``gdpr`` the two admin concerns; ``service``
the operations, the daily purge and the start-up checks.
"""
