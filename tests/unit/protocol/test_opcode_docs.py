"""docs/protocol.md lists every opcode exactly once, as opcodes.py describes it (generated, so it cannot drift)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fetchml_agent.protocol.opcodes import OPCODE_DOCS, STREAMING, Opcode

REPO = Path(__file__).resolve().parents[3]
PAGE = REPO / "docs" / "protocol.md"


def test_every_opcode_has_reference_text() -> None:
    assert set(OPCODE_DOCS) == set(Opcode)
    for op, doc in OPCODE_DOCS.items():
        assert doc.summary and doc.body and doc.answer, op


def test_the_page_is_generated_from_opcodes_py() -> None:
    cp = subprocess.run([sys.executable, str(REPO / "scripts" / "protocol_table.py"), "--check"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr + "\n(run scripts/protocol_table.py)"


def test_the_requests_section_lists_each_opcode_once() -> None:
    text = PAGE.read_text()
    section = text[text.index("## Requests") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `0x([0-9A-F]{2})` \|", section, flags=re.M)
    assert sorted(int(r, 16) for r in rows) == sorted(int(op) for op in Opcode)
    for op in STREAMING:
        row = next(line for line in section.splitlines() if line.startswith(f"| `0x{int(op):02X}` |"))
        assert "stream" in row, op


def test_docs_pages_named_in_the_code_exist() -> None:
    """An error's details or a docstring that sends a reader to docs/X.md finds the page."""
    named: dict[str, set[str]] = {}
    for base in ("fetchml_agent", "scripts", "plugins", "roles"):
        for path in (REPO / base).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yml", ".md", ".j2"):
                for page in re.findall(r"docs/[A-Za-z0-9_.-]+\.md", path.read_text(errors="replace")):
                    named.setdefault(page, set()).add(str(path.relative_to(REPO)))
    missing = {page: sorted(where) for page, where in named.items() if not (REPO / page).exists()}
    assert missing == {}
