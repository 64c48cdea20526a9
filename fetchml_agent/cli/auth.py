"""``ml auth sessions|mfa|elevate`` and ``ml jupyter password`` (docs/access.md).

The second factor for admin operations: where agent.yaml's ``access.mfa`` requires it, an admin's
key works for admin operations only within an *elevation*: ``ml auth elevate`` sends a TOTP (or
recovery) code once and the agent accepts that key for ``access.mfa_elevation`` (15 min by
default). When a command meets "MFA required", ``ml`` asks for the code itself (on a terminal, or
from ``FETCHML_OTP``), elevates, and runs the command once more.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ..errors import InvalidArgument
from ..protocol.opcodes import Opcode
from .output import emit_json, human_age, print_kv, print_table

__all__ = ["ask_code", "elevate_and_retry", "register"]

OTP_ENV = "FETCHML_OTP"


def ask_code(prompt: str = "authenticator code: ") -> str | None:
    """A code from ``FETCHML_OTP``, else typed on a terminal; ``None`` when neither is possible."""
    code = os.environ.get(OTP_ENV)
    if code:
        return code.strip()
    if sys.stdin.isatty():
        return input(prompt).strip() or None
    return None


def elevate_and_retry(ctx: Any) -> bool:
    """After an MFA-required error: elevate with a code if one can be had. True when elevated."""
    code = ask_code("admin operations need your second factor; authenticator code: ")
    if not code:
        return False
    reply = ctx.client.call(Opcode.MFA_ELEVATE, {"code": code})
    if not ctx.json:
        print(reply.message, file=sys.stderr)
    return True


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_sessions(ctx: Any) -> int:
    a = ctx.args
    if a.action == "end":
        if not a.session_id:
            raise InvalidArgument("name the session to end: ml auth sessions end SESSION_ID")
        reply = ctx.client.call(Opcode.SESSION_END, {"session_id": a.session_id})
        emit_json({"ok": True, "message": reply.message}) if ctx.json else print(reply.message)
        return 0
    reply = ctx.client.call(Opcode.SESSIONS_LIST, {"all": a.all, "ended": a.ended})
    if ctx.json:
        emit_json(reply.data)
        return 0
    rows = reply.data["sessions"]
    print_table(
        ["id", "user", "workspace", "login", "mfa", "address", "started", "last seen", "ends"],
        [[s["id"], s["user"], s["workspace"], s["method"], "yes" if s["mfa"] else "no", s["address"],
          human_age(s["created_at"]), human_age(s["last_seen"]),
          (f"ended ({s['end_reason']})" if s.get("ended_at") else _when(s.get("expires_at")))] for s in rows],
        empty="no open browser sessions",
    )
    return 0


def _print_qr(uri: str) -> None:
    try:
        import segno
    except ImportError:  # pragma: no cover - a dependency of the package
        return
    segno.make(uri, error="m").terminal(out=sys.stdout, compact=True)


def cmd_mfa(ctx: Any) -> int:
    a = ctx.args
    if a.mfa_action == "enroll":
        reply = ctx.client.call(Opcode.MFA_ENROLL)
        doc = reply.data
        code = a.code
        if ctx.json and not code:
            emit_json(doc)
            return 0
        if not ctx.json:
            print("Scan this with an authenticator app (or enter the secret by hand):\n")
            _print_qr(doc["uri"])
            print(f"\n{doc['uri']}\nsecret: {doc['secret']}\n")
            code = code or ask_code("code shown by the app, to confirm: ")
        if not code:
            print("not confirmed yet: ml auth mfa confirm CODE")
            return 0
        return _confirm(ctx, code)
    if a.mfa_action == "confirm":
        if not a.code:
            raise InvalidArgument("give the code: ml auth mfa confirm CODE")
        return _confirm(ctx, a.code)
    if a.mfa_action == "reset":
        if not a.user:
            raise InvalidArgument("name the user: ml auth mfa reset USER")
        reply = ctx.client.call(Opcode.MFA_RESET, {"user": a.user})
        emit_json({"ok": True, "message": reply.message}) if ctx.json else print(reply.message)
        return 0
    reply = ctx.client.call(Opcode.MFA_STATUS, {"user": a.user})
    emit_json(reply.data) if ctx.json else print_kv(list(reply.data.items()))
    return 0


def _confirm(ctx: Any, code: str) -> int:
    reply = ctx.client.call(Opcode.MFA_CONFIRM, {"code": code})
    if ctx.json:
        emit_json(reply.data)
        return 0
    print("enrolled. Recovery codes (each works once; keep them somewhere safe, they are not shown again):")
    for c in reply.data["recovery_codes"]:
        print("  " + c)
    return 0


def cmd_elevate(ctx: Any) -> int:
    code = ctx.args.code or ask_code()
    if not code:
        raise InvalidArgument("give the code: ml auth elevate --code CODE (or set FETCHML_OTP)")
    reply = ctx.client.call(Opcode.MFA_ELEVATE, {"code": code})
    emit_json(reply.data) if ctx.json else print(reply.message)
    return 0


def cmd_password(ctx: Any) -> int:
    a = ctx.args
    password: str | None = None
    if not a.remove:
        password = a.password or os.environ.get("FETCHML_WORKSPACE_PASSWORD")
        if not password:
            if not sys.stdin.isatty():
                raise InvalidArgument("give the password: --password, FETCHML_WORKSPACE_PASSWORD, or a terminal")
            password = getpass.getpass("new workspace password: ")
            if getpass.getpass("again: ") != password:
                raise InvalidArgument("the two passwords differ")
    reply = ctx.client.call(Opcode.WORKSPACE_PASSWORD, {"name": a.name, "password": password})
    emit_json({"ok": True, "message": reply.message}) if ctx.json else print(reply.message)
    return 0


def register(jupyter: Any, top: Any) -> None:
    auth = top.group("auth", help="browser sessions, MFA, the admin second factor",
                     description="Your browser sessions, your second factor (TOTP), admin step-up.",
                     dest="auth_verb", metavar="VERB", what="what to do (ml auth VERB --help for each)")
    auth.command("sessions", cmd_sessions, _sessions_args, help="list your browser sessions, or end one",
                 description="ml auth sessions [--all] [--ended] | ml auth sessions end SESSION_ID")
    auth.command("mfa", _mfa_entry, _mfa_args, help="enrol, confirm, show or reset TOTP",
                 description="ml auth mfa enroll [--code CODE] | confirm CODE | status [--user U] | reset USER")
    auth.command("elevate", cmd_elevate, _elevate_args, help="second factor for admin operations (access.mfa)")
    jupyter.command("password", cmd_password, _password_args, help="set or remove a workspace's password (owner, admin)",
                    description="The password logs a browser in as the workspace's owner; it takes effect at once. "
                                "Only the owner or an admin may set it.")


def _sessions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "end"], default="list",
                   help="list (the default) or end one session")
    p.add_argument("session_id", nargs="?", help="the session to end")
    p.add_argument("--all", action="store_true", help="everyone's sessions (admins)")
    p.add_argument("--ended", action="store_true", help="include ended sessions")


def _mfa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("mfa_action", choices=["enroll", "confirm", "status", "reset"],
                   help="enroll: start; confirm CODE: finish; status: show; reset USER: an admin clears it")
    p.add_argument("code", nargs="?", help="confirm: the code from the app (reset: the user)")
    p.add_argument("--code", dest="code_opt", help="enroll: confirm at once with this code")
    p.add_argument("--user", help="status/reset: the user (admins)")


def _elevate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--code", help="the code (else FETCHML_OTP, else asked on the terminal)")


def _password_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("--password", help="the new password (else FETCHML_WORKSPACE_PASSWORD, else asked)")
    p.add_argument("--remove", action="store_true", help="remove the password")


def _mfa_entry(ctx: Any) -> int:
    a = ctx.args
    if a.mfa_action == "enroll":
        a.code = a.code_opt or a.code
    elif a.mfa_action == "reset":
        a.user = a.user or a.code
    elif a.mfa_action == "confirm":
        a.code = a.code or a.code_opt
    return cmd_mfa(ctx)
