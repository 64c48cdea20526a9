"""A run's environment step: install the workspace's lock before the notebook runs.

Not imported by the agent: copied into the run's snapshot (``.fetchml/environment_step.py``) and
run there by the run's launcher with the image's Python, so standard library only.

``python3 environment_step.py LOCK REPORT`` installs the distributions pinned in ``LOCK`` (the
packages ``ml jupyter install`` put into the workspace, as ``name==version`` lines) with pip,
through the index the run's environment names (``PIP_INDEX_URL``: the agent's package index, so
the package policy applies), into a directory keyed by the lock's SHA-256 under
``FETCHML_ENV_CACHE`` (a volume runs share) or, without one, under the task's own directory. A
directory already complete for that hash is used as it is: nothing is installed. It prints the
``PYTHONPATH`` the notebook gets (that directory first) and writes ``REPORT`` (JSON: lock hash,
packages, cached, seconds, and the error when pip failed; exit status 3 then).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

DONE = ".fetchml-complete"
EXIT_ENVIRONMENT = 3


def main(lock: str, report: str) -> int:
    started = time.monotonic()
    with open(lock, "rb") as fh:
        data = fh.read()
    digest = hashlib.sha256(data).hexdigest()
    pins = [ln.strip() for ln in data.decode("utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    shared = os.environ.get("FETCHML_ENV_CACHE", "")
    root = shared or os.path.join(os.environ.get("NOMAD_TASK_DIR") or os.getcwd(), "fetchml-env")
    target = os.path.join(root, digest[:32])
    doc = {"lock": digest, "packages": len(pins), "cache": "shared" if shared else "task", "cached": True,
           "status": "ok", "error": None}
    if not os.path.exists(os.path.join(target, DONE)):
        doc["cached"] = False
        partial = f"{target}.partial-{os.getpid()}"
        os.makedirs(partial, exist_ok=True)
        env = {**os.environ, "PIP_USER": "0", "PIP_REQUIRE_VIRTUALENV": "0"}
        cp = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
             "--progress-bar", "off", "--no-deps", "--target", partial, "-r", lock],
            env=env, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(cp.stderr)
        if cp.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            lines = [ln.strip() for ln in cp.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            doc.update(status="failed", error=(errors or lines or [f"pip exited with {cp.returncode}"])[-1][:500])
        else:
            open(os.path.join(partial, DONE), "w").close()
            try:
                os.rename(partial, target)
            except OSError:  # another run completed it first: theirs is the same lock
                shutil.rmtree(partial, ignore_errors=True)
    doc["duration_s"] = round(time.monotonic() - started, 3)
    os.makedirs(os.path.dirname(report) or ".", exist_ok=True)
    with open(report, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    if doc["status"] != "ok":
        sys.stderr.write(f"fetchml: the run's environment could not be installed: {doc['error']}\n")
        return EXIT_ENVIRONMENT
    rest = os.environ.get("PYTHONPATH", "")
    sys.stdout.write(target + (os.pathsep + rest if rest else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
