"""Runs inside a workspace, with its Python: ``pip install --report FILE ARGS...`` in this same
process (one interpreter start, not two), then one marker line with what pip installed, so the
agent records exactly that.

Not imported by the agent: its source is sent as ``python3 -c SOURCE ARGS...`` (a workspace's
image need not have this package). Standard library only; the marker is :data:`MARK`.
"""

import json
import os
import runpy
import sys
import tempfile

MARK = "@@fetchml-pip-report@@ "


def _sha256(item):
    """The SHA-256 of the file pip installed (pip >= 22.2 reports it), else ""."""
    archive = (item.get("download_info") or {}).get("archive_info") or {}
    found = (archive.get("hashes") or {}).get("sha256")
    if not found and str(archive.get("hash") or "").startswith("sha256="):
        found = archive["hash"][len("sha256="):]
    return found or ""


def main() -> int:
    fd, path = tempfile.mkstemp(prefix="fetchml-pip-report-", suffix=".json")
    os.close(fd)
    sys.argv = ["pip", "install", "--report", path, *sys.argv[1:]]
    code = 0
    try:
        runpy.run_module("pip", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        if code == 0:
            with open(path, encoding="utf-8") as fh:
                report = json.load(fh)
            items = [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
                      "requested": bool(i.get("requested")), "sha256": _sha256(i)} for i in report.get("install", [])]
            sys.stdout.write("\n" + MARK + json.dumps(items) + "\n")
            sys.stdout.flush()
    finally:
        os.unlink(path)
    return code


if __name__ == "__main__":
    sys.exit(main())
