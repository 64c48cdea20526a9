"""``from_hcl``: parse HCL text on the controller (python-hcl2), for the verify step only."""

from __future__ import annotations

from typing import Any

import hcl2
from ansible.errors import AnsibleFilterError

__all__ = ["FilterModule"]


def from_hcl(text: str) -> dict[str, Any]:
    """Parsed HCL; block labels lose their quotes (``plugin "docker"`` → ``plugin[0]["docker"]``)."""
    try:
        data = hcl2.loads(text)
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        raise AnsibleFilterError(f"not valid HCL: {exc}") from None
    return _clean(data)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.strip('"'): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"from_hcl": from_hcl}
