"""The slice of Nomad's template block (consul-template over Go templates) that the double renders.

Supported actions, with any delimiters: ``with nomadVar "path"`` … ``end``, ``.item`` inside such
a ``with``, and ``env "NAME"``. A ``nomadVar`` path that does not exist blocks the task, as in
Nomad (the task waits with a ``Template`` event ``Missing: nomad.var.block(...)``). Any other
action is a template error, which fails the task like a template that does not parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MissingVariable", "TemplateError", "render"]


class TemplateError(Exception):
    pass


class MissingVariable(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def render(
    text: str,
    left: str,
    right: str,
    variable: Callable[[str], dict[str, str] | None],
    env: dict[str, str],
) -> str:
    """Render ``text``; ``variable(path)`` returns a Variable's items or ``None`` when missing."""
    left = left or "{{"
    right = right or "}}"
    pattern = re.compile(re.escape(left) + r"-?\s*(.*?)\s*-?" + re.escape(right), re.S)
    out: list[str] = []
    stack: list[dict[str, str]] = []
    pos = 0
    for match in pattern.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        action = match.group(1).strip()
        m_with = re.fullmatch(r'with\s+nomadVar\s+"([^"]+)"', action)
        m_env = re.fullmatch(r'env\s+"([^"]+)"', action)
        if m_with:
            items = variable(m_with.group(1))
            if items is None:
                raise MissingVariable(m_with.group(1))
            stack.append(items)
        elif action == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            stack.pop()
        elif re.fullmatch(r"\.[A-Za-z_][A-Za-z0-9_]*", action):
            if not stack:
                raise TemplateError(f"can't evaluate field {action[1:]} outside a with block")
            out.append(stack[-1].get(action[1:], "<no value>"))
        elif m_env:
            out.append(env.get(m_env.group(1), ""))
        else:
            raise TemplateError(f"function or action not supported by the Nomad double: {action!r}")
    if stack:
        raise TemplateError("unexpected EOF: unclosed with")
    out.append(text[pos:])
    return "".join(out)
