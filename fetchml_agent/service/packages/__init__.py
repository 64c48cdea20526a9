"""Packages: install, list, check, request/review/approve/deny, clear-cache, security-scan, uninstall.

Opcodes ``0x30``–``0x39`` (and their HTTP routes) on top of the policy engine
(:mod:`fetchml_agent.policy`), one module per concern:

- :mod:`.service` — :class:`PackageService`, one per agent, made by
  :func:`fetchml_agent.agent.build_services`: :mod:`.policies` (the global policy from agent.yaml
  ``package_management:`` with the ``FETCHML_JUPYTER_*`` overrides, each workspace's effective
  policy tightened by its ``security:`` and a ``workspace-security.yaml`` in its directory, the
  approved requests) and :mod:`.index` (the filtering package index mounted at ``/index``, the
  URLs and files that point each workspace's installers at it, what it decides);
- :mod:`.scans` — the startup scan and the inventory of what a workspace holds;
- :mod:`.hooks` — how the policy takes part in creating, deleting, resetting workspaces and in
  ``ml status``;
- :mod:`.vulnerabilities` — the known-vulnerability data kept loaded, and its ``ml status`` section;
- :mod:`.install` (``0x30``), :mod:`.ops` (list, check, clear-cache, security-scan),
  :mod:`.requests` (request, review, approve, deny) and :mod:`.removals` (``0x39`` uninstall) —
  the operations; :mod:`.args` and :mod:`.decisions` what they share; :mod:`.pip_report` the
  program pip runs in a workspace.

Every decision, allow or deny, writes one audit event (``package.decision``; ``package.index``
for what the index decides while pip runs).
"""

from __future__ import annotations

from .policies import SECURITY_FILE
from .service import PackageService

__all__ = ["SECURITY_FILE", "PackageService"]
