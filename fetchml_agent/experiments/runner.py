"""The process that executes one run, detached from the agent: ``python -m fetchml_agent.experiments.runner RUN_DIR``.

The agent starts it in the workspace's own environment (its venv Python first on ``PATH``, its
variables): through the workspace's *warm runner* when one runs (a process started once with
``runtime.exec`` that has papermill imported and forks runners on request; ``--serve``), else with
``runtime.exec`` of this module. Either way the runner is forked into a session of its own and its
``{"pid": …, "start_time": …}`` is answered at once, so the runner outlives an agent that is
killed: a new agent adopts it by pid and start time and still learns the outcome from
``result.json``.

Files in ``RUN_DIR`` (the contract with :mod:`fetchml_agent.experiments.executor`):

``job.json``         what to run (written by the agent before launch)
``launched``         created exclusively by the launcher: a run directory runs at most once
``state.json``       the runner's pid and start time
``progress.json``    attempt, current cell and cell count, rewritten as each cell starts (cells
                     count from 1, as papermill's log does, in the executed notebook, which has
                     the injected-parameters cell)
``attempt-N.json``   what attempt N ended with (written by the attempt's process)
``result.json``      the outcome, written last and atomically: its presence means "finished"
``output.ipynb``     the executed notebook (papermill saves it after every cell)
``metrics.jsonl``    what ``fetchml.log_metric`` recorded; ``work/`` is the working directory and
                     ``work/outputs/`` the files kept with the run; ``run.log`` all output

Each attempt runs in a forked child (papermill in-process for notebooks, ``exec`` of the
workspace's Python for scripts) watched by this runner, which enforces the per-attempt timeout,
samples the tree's resident memory, retries failed attempts and answers SIGTERM (cancel) by
killing the attempt's tree. Standard library only, apart from papermill in a notebook's attempt.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..jsonfiles import read_json, write_json
from ..procs import kill_tree, start_time, tree_rss

#: The Python a script run executes with, where the runner itself runs elsewhere (the local
#: runtime: the runner and papermill in the server environment, user code in the workspace's
#: kernel environment); unset: the runner's own.
KERNEL_PYTHON_ENV = "FETCHML_KERNEL_PYTHON"

__all__ = ["EXIT_CANCELLED", "EXIT_TIMEOUT", "main", "read_json", "write_json"]

EXIT_TIMEOUT = 124  # timeout(1)'s convention
EXIT_CANCELLED = 143  # 128 + SIGTERM
_SAMPLE_S = 0.25
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


class _Runner:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.job: dict[str, Any] = json.loads((run_dir / "job.json").read_text())
        self.child: int | None = None
        self.cancelled = False

    # -- signals ------------------------------------------------------------------------------

    def _on_term(self, signum: int, frame: Any) -> None:
        self.cancelled = True
        if self.child:
            kill_tree(self.child)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        started = time.time()
        write_json(self.dir / "state.json", {"pid": os.getpid(), "start_time": start_time(os.getpid()), "started_at": started})
        work = Path(self.job["work_dir"])
        (work / "outputs").mkdir(parents=True, exist_ok=True)
        os.environ.update(
            {
                "FETCHML_RUN_ID": self.job["run_id"],
                "FETCHML_EXPERIMENT": self.job["experiment"],
                "FETCHML_METRICS_FILE": str(self.dir / "metrics.jsonl"),
                "FETCHML_OUTPUTS_DIR": str(work / "outputs"),
                "FETCHML_PARAMETERS": json.dumps(self.job.get("parameters") or {}),
            }
        )
        attempts: list[dict[str, Any]] = []
        for n in range(1, int(self.job.get("retries") or 0) + 2):
            if self.cancelled:
                break
            record = self._attempt(n)
            attempts.append(record)
            print(f"[fetchml] attempt {n}: {record['status']} {record['message']}".rstrip(), flush=True)
            if record["status"] != "failed":
                break
        last = attempts[-1] if attempts else {"status": "cancelled", "message": "cancelled before it started",
                                              "error": None, "exit_code": EXIT_CANCELLED}
        if self.cancelled and last["status"] != "succeeded":
            last = {**last, "status": "cancelled", "message": "cancelled", "exit_code": EXIT_CANCELLED}
        finished = time.time()
        progress = read_json(self.dir / "progress.json") or {}
        warnings: list[str] = []
        for a in attempts:
            warnings.extend(w for w in a.get("warnings", []) if w not in warnings)
        write_json(
            self.dir / "result.json",
            {
                "status": last["status"],
                "message": last["message"],
                "error": last.get("error"),
                "exit_code": last.get("exit_code"),
                "started_at": started,
                "finished_at": finished,
                "duration_s": round(finished - started, 3),
                "peak_memory_bytes": max((a.get("peak_memory_bytes") or 0 for a in attempts), default=0),
                "attempts": attempts,
                "warnings": warnings,
                "cells_total": progress.get("cells"),
                "output_notebook": (self.dir / "output.ipynb").is_file(),
            },
        )
        return 0

    def _attempt(self, n: int) -> dict[str, Any]:
        os.environ["FETCHML_ATTEMPT"] = str(n)
        write_json(self.dir / "progress.json", {"attempt": n, "cell": None, "cells": None, "at": time.time()})
        log = self.dir / "run.log"
        offset = log.stat().st_size if log.exists() else 0
        timeout = self.job.get("timeout_s")
        began = time.time()
        deadline = began + float(timeout) if timeout else None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                code = _attempt_child(self.dir, self.job, n)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.child = pid
        peak = 0
        timed_out = False
        pidfd = os.pidfd_open(pid)
        try:
            while True:
                wait = _SAMPLE_S if deadline is None else max(0.0, min(_SAMPLE_S, deadline - time.time()))
                ready, _, _ = select.select([pidfd], [], [], wait)
                if ready:
                    break
                peak = max(peak, tree_rss(pid))
                if deadline is not None and time.time() >= deadline and not self.cancelled:
                    timed_out = True
                    kill_tree(pid)
        finally:
            os.close(pidfd)
        _, wstatus, usage = os.wait4(pid, 0)
        self.child = None
        kill_tree(pid, include_root=False)  # a process the attempt left behind does not outlive it
        peak = max(peak, usage.ru_maxrss * 1024)
        ended = time.time()
        base = {"attempt": n, "started_at": began, "finished_at": ended, "duration_s": round(ended - began, 3),
                "peak_memory_bytes": peak, "warnings": []}
        reported = read_json(self.dir / f"attempt-{n}.json") or {}
        base["warnings"] = reported.get("warnings", [])
        if timed_out:
            where = read_json(self.dir / "progress.json") or {}
            cell = f" in cell {where['cell']}" if where.get("cell") is not None else ""
            limit = f"timed out after {float(timeout or 0):g} s"
            return {**base, "status": "failed", "message": limit + cell,
                    "error": {"ename": "Timeout", "evalue": limit, "cell": where.get("cell")}, "exit_code": EXIT_TIMEOUT}
        if self.cancelled:
            return {**base, "status": "cancelled", "message": "cancelled", "error": None, "exit_code": EXIT_CANCELLED}
        if reported.get("status"):
            return {**base, **{k: reported.get(k) for k in ("status", "message", "error", "exit_code")}}
        code = os.waitstatus_to_exitcode(wstatus)
        if self.job["kind"] == "script":
            last = _last_error_line(log, offset)
            if code == 0:
                return {**base, "status": "succeeded", "message": "", "error": None, "exit_code": 0}
            return {**base, "status": "failed", "message": f"exited with code {code}" + (f": {last}" if last else ""),
                    "error": {"ename": last.split(":", 1)[0] if last else "ExitCode", "evalue": last, "cell": None},
                    "exit_code": code}
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        return {**base, "status": "failed", "message": f"the notebook's process {how}{hint}",
                "error": {"ename": "ProcessExit", "evalue": how, "cell": None}, "exit_code": code}


def _last_error_line(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(offset, fh.seek(0, os.SEEK_END) - 65536))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else ""


def _attempt_child(run_dir: Path, job: dict[str, Any], n: int) -> int:
    """Runs in the forked child: execute the notebook or exec the script. Returns the exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    work = Path(job["work_dir"])
    os.chdir(work)
    target = work / job["target"]
    if job["kind"] == "script":
        python = os.environ.get(KERNEL_PYTHON_ENV) or sys.executable
        os.execv(python, [python, str(target)])
    return _run_notebook(run_dir, job, n, target, work)


def _run_notebook(run_dir: Path, job: dict[str, Any], n: int, target: Path, work: Path) -> int:
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    warnings: list[str] = []

    class _Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING and record.name.startswith("papermill"):
                warnings.append(record.getMessage())

    logging.getLogger("papermill").addHandler(_Capture())
    # jsonschema (through nbformat) imports rfc3987_syntax when installed, only to check IRI
    # formats that notebook validation never uses; building its grammar costs seconds per run.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import papermill
    from papermill.exceptions import PapermillExecutionError

    cells: dict[str, int] = {}

    def on_notebook_start(notebook: Any, **_: Any) -> None:
        cells["total"] = len(notebook.cells)

    def on_cell_start(cell: Any, cell_index: int, **_: Any) -> None:
        first = next((ln for ln in str(cell.source).splitlines() if ln.strip()), "")
        write_json(run_dir / "progress.json",
                   {"attempt": n, "cell": cell_index + 1, "cells": cells.get("total"), "source": first[:120], "at": time.time()})

    out: dict[str, Any] = {"attempt": n}
    try:
        papermill.execute_notebook(
            str(target),
            str(run_dir / "output.ipynb"),
            parameters=job.get("parameters") or None,
            kernel_name=job.get("kernel"),
            language=job.get("language"),  # set when the notebook names none (files.notebook_kernel)
            progress_bar=False,
            log_output=True,
            cwd=str(work),
            start_timeout=120,
            shutdown_kernel="immediate",  # the kernel's state is not needed once the last cell ran
            on_notebook_start=on_notebook_start,
            on_cell_start=on_cell_start,
        )
        out.update(status="succeeded", message="", error=None, exit_code=0)
    except PapermillExecutionError as exc:
        tb = [_ANSI.sub("", line) for line in (exc.traceback or [])]
        source = next((ln for ln in str(exc.source).splitlines() if ln.strip()), "")
        out.update(
            status="failed",
            message=f"cell {exc.cell_index + 1} (In [{exc.exec_count}]) failed: {exc.ename}: {exc.evalue}",
            error={"cell": exc.cell_index + 1, "execution_count": exc.exec_count, "ename": exc.ename,
                   "evalue": exc.evalue, "source": source[:200], "traceback": "\n".join(tb)[-4000:]},
            exit_code=1,
        )
    except Exception as exc:  # kernel died, bad notebook, missing kernel: the run failed, say why
        out.update(status="failed", message=f"{type(exc).__name__}: {exc}"[:1000],
                   error={"cell": None, "ename": type(exc).__name__, "evalue": str(exc)[:1000]}, exit_code=2)
    out["warnings"] = warnings
    write_json(run_dir / f"attempt-{n}.json", out)
    return int(out["exit_code"])


def _start_runner(run_dir: Path, env: dict[str, str] | None = None, close: tuple[int, ...] = ()) -> dict[str, Any]:
    """Fork the runner of ``run_dir`` into a session of its own; ``{"pid", "start_time"}``, or
    ``{"error"}`` when the directory was launched before (a run is never started twice)."""
    try:
        os.close(os.open(run_dir / "launched", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return {"error": f"{run_dir} was launched before; a run is never started twice"}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in close:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            os.environ.update(env or {})
            _redirect(run_dir / "run.log")
            code = _Runner(run_dir).run()
        except BaseException as exc:
            traceback.print_exc()
            if not (run_dir / "result.json").exists():
                write_json(run_dir / "result.json", {"status": "failed", "message": f"the runner failed: {type(exc).__name__}: {exc}",
                                                     "error": None, "exit_code": None, "attempts": []})
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return {"pid": pid, "start_time": start_time(pid)}


def _redirect(log_path: Path) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)


def _preload() -> None:
    """What every notebook attempt imports, imported once by the warm runner."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # see _run_notebook
    try:
        import papermill  # noqa: F401
    except Exception:  # an attempt will report it, with the workspace's own traceback
        traceback.print_exc()


def _serve(sock_path: Path, idle_s: float) -> int:
    """Start the warm runner on ``sock_path``: a process of the workspace's environment that has
    papermill imported and forks runners on request (one JSON line ``{"run_dir", "env"}`` in,
    ``{"pid", "start_time"}`` or ``{"error"}`` out). It exits after ``idle_s`` without requests,
    or as soon as its socket file is removed (the workspace was deleted). Returns once it listens."""
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        code = 1
        try:
            os.setsid()
            _redirect(sock_path.with_suffix(".log"))
            code = _serve_forever(sock_path, idle_s, ready_w)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(ready_w)
    with os.fdopen(ready_r) as fh:
        answer = fh.read().strip()
    if answer != "ok":
        print(json.dumps({"error": answer or "the warm runner exited during start-up"}))
        return 1
    print(json.dumps({"pid": pid, "start_time": start_time(pid)}), flush=True)
    return 0


def _serve_forever(sock_path: Path, idle_s: float, ready_w: int) -> int:
    import socket

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(sock_path))
    except OSError as exc:
        os.write(ready_w, f"cannot listen on {sock_path}: {exc.strerror}".encode())
        os.close(ready_w)
        return 1
    os.chmod(sock_path, 0o600)
    server.listen(64)
    ident = os.stat(sock_path).st_ino
    os.write(ready_w, b"ok")
    os.close(ready_w)
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners it forks are reaped by the kernel
    server.settimeout(min(5.0, idle_s))
    last = time.monotonic()
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            try:
                gone = os.stat(sock_path).st_ino != ident
            except OSError:
                gone = True
            if gone or time.monotonic() - last > idle_s:
                break
            continue
        last = time.monotonic()
        with conn:
            try:
                conn.settimeout(10)
                line = conn.makefile("rb").readline()
                request = json.loads(line)
                reply = _start_runner(Path(request["run_dir"]), request.get("env"), close=(server.fileno(), conn.fileno()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                reply = {"error": f"bad request to the warm runner: {exc}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass
    try:
        if os.stat(sock_path).st_ino == ident:
            sock_path.unlink()
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """``RUN_DIR``: launch its runner detached, print ``{"pid", "start_time"}``, return at once.
    ``--serve SOCKET IDLE_S``: start the warm runner (see :func:`_serve`) and return once it listens."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--serve":
        return _serve(Path(args[1]), float(args[2]))
    if len(args) != 1:
        print("usage: python -m fetchml_agent.experiments.runner RUN_DIR | --serve SOCKET IDLE_SECONDS", file=sys.stderr)
        return 2
    reply = _start_runner(Path(args[0]).resolve())
    print(json.dumps(reply), flush=True)
    return 3 if "error" in reply else 0


if __name__ == "__main__":
    sys.exit(main())
