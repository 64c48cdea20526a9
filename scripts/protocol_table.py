#!/usr/bin/env python3
"""Write the opcode table of docs/protocol.md from fetchml_agent/protocol/opcodes.py.

    scripts/protocol_table.py [--check]

The table sits between ``<!-- opcodes -->`` and ``<!-- /opcodes -->``; one row per
:class:`~fetchml_agent.protocol.opcodes.Opcode`, in opcode order, with the text of ``OPCODE_DOCS``
and "stream →" for the opcodes in ``STREAMING``. ``--check`` changes nothing and exits 1 when the
page is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fetchml_agent.protocol.opcodes import OPCODE_DOCS, SEED_OPCODES, STREAMING, Opcode  # noqa: E402

__all__ = ["PAGE", "main", "opcode_table"]

PAGE = REPO / "docs" / "protocol.md"
START, END = "<!-- opcodes -->", "<!-- /opcodes -->"


def opcode_table() -> str:
    """The Markdown table: opcode, what it does, layout or JSON body keys, answer."""
    missing = [op.name for op in Opcode if op not in OPCODE_DOCS]
    if missing:
        raise SystemExit(f"OPCODE_DOCS has no entry for {', '.join(missing)}")
    rows = ["| opcode | name | layout or body keys | answer |", "|---|---|---|---|"]
    for op in sorted(Opcode):
        doc = OPCODE_DOCS[op]
        answer = doc.answer if op in SEED_OPCODES or op not in STREAMING else f"stream → {doc.answer}"
        cells = (f"`0x{int(op):02X}`", doc.summary, doc.body, answer)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def render(page: str) -> str:
    head, sep, rest = page.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{PAGE}: the markers {START} and {END} are missing")
    return f"{head}{START}\n{opcode_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/protocol.md is stale")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE}: the opcode table is stale; run scripts/protocol_table.py", file=sys.stderr)
            return 1
        return 0
    if new != page:
        PAGE.write_text(new)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
