"""The one table of opcodes and packet types. ``docs/protocol.md`` documents each layout.

The seed defines ``0x0D``–``0x0F``; every other opcode is this project's and carries a JSON object
body (see :class:`~fetchml_agent.protocol.packets.JsonRequest`). Values are grouped by concern:
``0x10`` the connection itself (hello), ``0x20`` workspaces, ``0x30`` packages, ``0x40``
experiments, ``0x50`` access and audit, ``0x60`` images and operations, ``0x70`` administration
(retention, GDPR requests).

The seed's opcodes answer exactly as the seed says (one packet each) unless the client has
announced the ``stream`` capability with ``HELLO``; the project's own opcodes answer as
:data:`STREAMING` says whatever the client announced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CAPABILITIES",
    "CAP_STREAM",
    "OPCODE_DOCS",
    "Opcode",
    "OpcodeDoc",
    "PacketType",
    "SEED_OPCODES",
    "STREAMING",
]


class PacketType(enum.IntEnum):
    SUCCESS = 0x00
    ERROR = 0x01
    PROGRESS = 0x02
    LOG = 0x03
    DATA = 0x04


class Opcode(enum.IntEnum):
    # The seed's service commands.
    START_JUPYTER = 0x0D
    STOP_JUPYTER = 0x0E
    LIST_JUPYTER = 0x0F

    # The connection: the client says what it understands beyond the seed.
    HELLO = 0x10

    # Workspaces.
    CREATE_WORKSPACE = 0x20
    WORKSPACE_INFO = 0x21
    WORKSPACE_STATUS = 0x22
    RESTART_WORKSPACE = 0x23
    DELETE_WORKSPACE = 0x24
    AGENT_STATUS = 0x25
    WORKSPACE_STATS = 0x26
    RESET_WORKSPACE = 0x27
    SCALE_WORKSPACE = 0x28
    WORKSPACE_LIMITS = 0x29
    MONITOR_WORKSPACE = 0x2A
    WORKSPACE_LOGS = 0x2B
    WORKSPACE_GIT = 0x2C
    NOTEBOOK_VERSION = 0x2D
    OPTIMIZE_WORKSPACE = 0x2E
    SUBSCRIBE = 0x2F

    # Packages and policy.
    INSTALL_PACKAGE = 0x30
    LIST_PACKAGES = 0x31
    CHECK_PACKAGE = 0x32
    REQUEST_PACKAGE = 0x33
    REVIEW_REQUESTS = 0x34
    APPROVE_REQUEST = 0x35
    DENY_REQUEST = 0x36
    CLEAR_CACHE = 0x37
    SECURITY_SCAN = 0x38
    UNINSTALL_PACKAGE = 0x39

    # Experiments.
    LINK_EXPERIMENT = 0x40
    QUEUE_RUN = 0x41
    SYNC_WORKSPACE = 0x42
    WORKSPACE_METADATA = 0x43
    EXPORT_WORKSPACE = 0x44
    CANCEL_RUN = 0x45
    RUN_STATUS = 0x46
    RUN_INFO = 0x47

    # Access and audit.
    GRANT_ACCESS = 0x50
    REVOKE_ACCESS = 0x51
    SHARE_WORKSPACE = 0x52
    AUDIT_LOG = 0x53
    SESSIONS_LIST = 0x54
    SESSION_END = 0x55
    MFA_ENROLL = 0x56
    MFA_CONFIRM = 0x57
    MFA_STATUS = 0x58
    MFA_RESET = 0x59
    MFA_ELEVATE = 0x5A
    WORKSPACE_PASSWORD = 0x5B
    AUDIT_VERIFY = 0x5C
    AUDIT_VERIFY_EXPORT = 0x5D

    # Images and operations.
    BUILD_IMAGE = 0x60
    WORKSPACE_HISTORY = 0x61
    WORKSPACE_REPORT = 0x62

    # Administration.
    RETENTION = 0x70
    USER_EXPORT = 0x71
    USER_ERASE = 0x72


SEED_OPCODES: frozenset[Opcode] = frozenset({Opcode.START_JUPYTER, Opcode.STOP_JUPYTER, Opcode.LIST_JUPYTER})

# Capabilities a client may announce with HELLO. ``stream``: the seed's opcodes may answer as the
# project's do (START_JUPYTER streams progress and a data packet ``workspace`` before its success).
CAP_STREAM = "stream"
CAPABILITIES: frozenset[str] = frozenset({CAP_STREAM})

# Opcodes whose answer is a stream: progress/log packets, optionally one data packet with the
# result, and always a final success or error packet. Every other opcode answers with exactly one
# packet: success, error or data. START_JUPYTER streams only for a client that announced
# CAP_STREAM; to a seed client it answers one success or error packet.
STREAMING: frozenset[Opcode] = frozenset(
    {
        Opcode.START_JUPYTER,
        Opcode.CREATE_WORKSPACE,
        Opcode.RESTART_WORKSPACE,
        Opcode.RESET_WORKSPACE,
        Opcode.INSTALL_PACKAGE,
        Opcode.UNINSTALL_PACKAGE,
        Opcode.MONITOR_WORKSPACE,
        Opcode.BUILD_IMAGE,
        Opcode.SCALE_WORKSPACE,
        Opcode.SUBSCRIBE,
    }
)


@dataclass(frozen=True)
class OpcodeDoc:
    """The reference text of one opcode; ``docs/protocol.md``'s tables are rendered from these
    (``scripts/protocol_table.py``), so the page lists every opcode once and nothing else."""

    summary: str  # what it does (and the command that sends it)
    body: str  # the seed's byte layout, or the keys of the JSON body
    answer: str  # the result; for STREAMING opcodes it follows any progress and log packets


OPCODE_DOCS: dict[Opcode, OpcodeDoc] = {
    Opcode.START_JUPYTER: OpcodeDoc(
        "start Jupyter service (`ml jupyter start`)",
        "`[opcode:1][api_key_hash:16][name_len:1][name][workspace_len:2][workspace][password_len:1][password]`",
        "success or error; a client that announced `stream` gets progress, then data `workspace`, then success",
    ),
    Opcode.STOP_JUPYTER: OpcodeDoc(
        "stop Jupyter service (`ml jupyter stop`)", "`[opcode:1][api_key_hash:16][service_id_len:1][service_id]`",
        "success or error",
    ),
    Opcode.LIST_JUPYTER: OpcodeDoc(
        "list Jupyter services (`ml jupyter list`)", "`[opcode:1][api_key_hash:16]`", "data `jupyter_services` or error"
    ),
    Opcode.HELLO: OpcodeDoc(
        "hello: what the client understands beyond the seed (`ml` sends it first)",
        "`client` (free text), `capabilities` (list of strings; known: `stream`)",
        "data `hello` (`agent`, `protocol`, `capabilities` accepted, `user`, `role`, `max_frame`)",
    ),
    Opcode.CREATE_WORKSPACE: OpcodeDoc(
        "create workspace",
        "`name`, `cpu`, `memory`, `gpu`, `disk`, `image`, `password`, `experiment`, `template`, `config` "
        "(a workspace-config document), `resources`, `security`, `environment`, `packages`",
        "data `workspace`",
    ),
    Opcode.WORKSPACE_INFO: OpcodeDoc("workspace info", "`name`", "data `workspace`"),
    Opcode.WORKSPACE_STATUS: OpcodeDoc("workspace status (live)", "`name`", "data `workspace_status`"),
    Opcode.RESTART_WORKSPACE: OpcodeDoc("restart workspace", "`name`", "data `workspace`"),
    Opcode.DELETE_WORKSPACE: OpcodeDoc("delete workspace", "`name`", "success"),
    Opcode.AGENT_STATUS: OpcodeDoc(
        "agent status (`ml status`)", "—", "data `agent_status` (with a `runs` section: see [experiments.md](experiments.md))"
    ),
    Opcode.WORKSPACE_STATS: OpcodeDoc("workspace stats", "`name`", "data `workspace_stats`"),
    Opcode.RESET_WORKSPACE: OpcodeDoc("reset workspace", "`name`, `hard`", "data `workspace`"),
    Opcode.SCALE_WORKSPACE: OpcodeDoc("scale workspace", "`name`, `cpu`, `memory`, `gpu`", "data `workspace`"),
    Opcode.WORKSPACE_LIMITS: OpcodeDoc("workspace limits", "`name`", "data `workspace_limits`"),
    Opcode.MONITOR_WORKSPACE: OpcodeDoc(
        "monitor workspace", "`name`, `interval`, `count`", "success (each sample is a log packet: one JSON line)"
    ),
    Opcode.WORKSPACE_LOGS: OpcodeDoc("workspace logs (JupyterLab's server log)", "`name`, `lines`", "data `workspace_logs`"),
    Opcode.WORKSPACE_GIT: OpcodeDoc(
        "git in the workspace (`ml jupyter git WS VERB ...`)", "`name`, `args` (git's arguments, verb first)",
        "data `git` (`exit_code`, `output`)",
    ),
    Opcode.NOTEBOOK_VERSION: OpcodeDoc(
        "notebook versions (`ml jupyter version WS NOTEBOOK`)",
        "`name`, `notebook`, `action` (`save`, `list`, `restore`), `version`, `note`",
        "data `notebook_versions`",
    ),
    Opcode.OPTIMIZE_WORKSPACE: OpcodeDoc(
        "optimize workspace (use against limits, idle kernels)", "`name`, `apply`, `idle_minutes`", "data `optimize`"
    ),
    Opcode.SUBSCRIBE: OpcodeDoc(
        "subscribe to live changes of workspaces and runs (`ml status --watch`)",
        "`topics` (`workspaces`, `runs`; default both), `workspace` (only this one), `after` (a sequence "
        "number, e.g. `agent_status`'s `live_seq`: the changes after it come first), `max_events` (end after that "
        "many; 0: no limit), `timeout` (seconds without a change before it ends; 0: never)",
        "success, once it ends (`max_events`, `timeout`, or never until the client closes); each change is a log "
        "packet holding one JSON line `{seq, type, ts, ...}`: `workspace` (`id`, `name`, `status`, `message`), "
        "`run` (`id`, `workspace`, `status`, `message`, ...), `gap` (changes were missed: read the state again), "
        "`heartbeat` (every 15 s)",
    ),
    Opcode.INSTALL_PACKAGE: OpcodeDoc(
        "install packages",
        "`name`, `packages` (specs as typed), `package` + `version` (the seed's HTTP body), `conda`, `channels`, "
        "`force` (admin)",
        "data `package_install` (pip's output arrives as log packets)",
    ),
    Opcode.LIST_PACKAGES: OpcodeDoc("list packages", "`name`", "data `package_list`"),
    Opcode.CHECK_PACKAGE: OpcodeDoc(
        "check a package",
        "`spec` (or `package` + `version`), `workspace`, `conda`, `channels`; or `requirements` (a requirements "
        "file's text)",
        "data `package_check` (`decision`, `package`, `rule`, `reason`, `spec`, `workspace`) or `package_check_list`",
    ),
    Opcode.REQUEST_PACKAGE: OpcodeDoc(
        "request a package", "`name`, `spec` (or `package` + `version`), `reason`, `conda`", "data `package_request`"
    ),
    Opcode.REVIEW_REQUESTS: OpcodeDoc(
        "review requests", "`pending` (admin), `workspace`, `status`", "data `package_requests`"
    ),
    Opcode.APPROVE_REQUEST: OpcodeDoc("approve a request (admin)", "`request_id`, `reason`", "data `package_request`"),
    Opcode.DENY_REQUEST: OpcodeDoc("deny a request (admin)", "`request_id`, `reason` (required)", "data `package_request`"),
    Opcode.CLEAR_CACHE: OpcodeDoc("clear package caches", "`name`", "data `package_cache`"),
    Opcode.SECURITY_SCAN: OpcodeDoc("security scan", "`name`",
                                    "data `security_scan` (with `vulnerabilities`: docs/package-policy.md)"),
    Opcode.UNINSTALL_PACKAGE: OpcodeDoc(
        "uninstall packages (`ml jupyter uninstall`; HTTP `DELETE /api/v1/jupyter/workspaces/{name}/packages`)",
        "`name`, `packages` (names)", "data `package_uninstall` (pip's output arrives as log packets)"),
    Opcode.LINK_EXPERIMENT: OpcodeDoc(
        "link experiment", "`name`, `experiment_id` (created when new)", "data `experiment_link`"
    ),
    Opcode.QUEUE_RUN: OpcodeDoc(
        "queue run",
        "`workspace`, `experiment`, `notebook` or `script`, `parameters` (object), `config` (an experiment-config "
        "document), `config_name`, `config_path`",
        "data `run`",
    ),
    Opcode.SYNC_WORKSPACE: OpcodeDoc(
        "sync workspace", "`name`, `direction` (`to-experiment`, `from-experiment`, `full`), `experiment`", "data `sync`"
    ),
    Opcode.WORKSPACE_METADATA: OpcodeDoc("workspace metadata", "`name`", "data `workspace_metadata`"),
    Opcode.EXPORT_WORKSPACE: OpcodeDoc("export workspace", "`name`, `format` (`json`, `csv`)", "data `workspace_export`"),
    Opcode.CANCEL_RUN: OpcodeDoc("cancel run", "`run_id`", "data `run`"),
    Opcode.RUN_STATUS: OpcodeDoc("run status (list)", "`workspace`, `experiment`, `status`, `limit`", "data `runs`"),
    Opcode.RUN_INFO: OpcodeDoc("run info", "`run_id`", "data `run` (with `attempts`, `config`, `metrics`)"),
    Opcode.GRANT_ACCESS: OpcodeDoc("grant access", "`name`, `user` or `team`, `role`",
                                   "data `access` (with `previous_role`: the role it replaced, null when new)"),
    Opcode.REVOKE_ACCESS: OpcodeDoc("revoke access", "`name`, `principal` (`USER` or `team:NAME`)", "success"),
    Opcode.SHARE_WORKSPACE: OpcodeDoc("share workspace", "`name`, `team`, `role`",
                                      "data `access` (with `previous_role`)"),
    Opcode.AUDIT_LOG: OpcodeDoc("audit log", "`name`, `limit`, `action` (a prefix)",
                                "data `audit_log` (each event with its chain `digest`: docs/audit.md)"),
    Opcode.SESSIONS_LIST: OpcodeDoc(
        "list browser sessions (`ml auth sessions`; HTTP `GET /api/v1/auth/sessions`)", "`all` (admins), `ended`",
        "data `sessions`"),
    Opcode.SESSION_END: OpcodeDoc("end a session (`DELETE /api/v1/auth/sessions/{session_id}`)", "`session_id`",
                                  "success"),
    Opcode.MFA_ENROLL: OpcodeDoc("start TOTP enrolment (`POST /api/v1/auth/mfa/enroll`)", "—",
                                 "data `mfa_enrollment` (`uri`, `secret`)"),
    Opcode.MFA_CONFIRM: OpcodeDoc("confirm enrolment (`POST /api/v1/auth/mfa/confirm`)", "`code`",
                                  "data `mfa_confirmed` (`recovery_codes`, shown once)"),
    Opcode.MFA_STATUS: OpcodeDoc("MFA status (`GET /api/v1/auth/mfa`)", "`user` (admins)", "data `mfa_status`"),
    Opcode.MFA_RESET: OpcodeDoc("reset an enrolment (`DELETE /api/v1/auth/mfa/{user}`)", "`user`", "success"),
    Opcode.MFA_ELEVATE: OpcodeDoc("elevate: second factor for admin operations (`POST /api/v1/auth/elevate`)",
                                  "`code`", "data `mfa_elevation` (`until`)"),
    Opcode.WORKSPACE_PASSWORD: OpcodeDoc(
        "set or remove a workspace's password, owner or admin (`PUT /api/v1/jupyter/workspaces/{name}/password`)",
        "`name`, `password` (null removes)", "success"),
    Opcode.AUDIT_VERIFY: OpcodeDoc(
        "verify the audit chain, admin (`ml jupyter audit --verify`; HTTP `POST /api/v1/audit/verify`)",
        "`name` (optional)", "data `audit_verify` (`ok`, `checked`, `first_bad`): docs/audit.md"),
    Opcode.AUDIT_VERIFY_EXPORT: OpcodeDoc(
        "verify an audit export against the chain, admin (`ml jupyter audit --verify-export FILE`)",
        "`events` (`id`, `digest` and the exported fields), `source`", "data `audit_verify_export`"),
    Opcode.BUILD_IMAGE: OpcodeDoc(
        "build image (`ml jupyter build`; HTTP `POST /api/v1/images`)",
        "`name` (tag), `base`, `packages` (list of specs; each item may hold several, space-separated), "
        "`gpu_support`",
        "data `image` (`image`, `base`, `packages`, `gpu_support`; the build log arrives as log packets); "
        "`0x05`/`0x06` for a package the policy refuses (before any build), `0x15` on a runtime that cannot build "
        "(local)",
    ),
    Opcode.WORKSPACE_HISTORY: OpcodeDoc(
        "usage history (`ml jupyter stats NAME --since 24h`; HTTP `GET /api/v1/jupyter/workspaces/{name}/history`)",
        "`name`, `since` (a duration: `24h`, `7d`), `points` (at most this many, default 500)",
        "data `workspace_history` (`series`, `events`, `summary`, `step_s`): docs/observe.md"),
    Opcode.WORKSPACE_REPORT: OpcodeDoc(
        "usage report (`ml jupyter report NAME`; HTTP `GET /api/v1/jupyter/workspaces/{name}/report`)",
        "`name`, `format` (`html`, `text`, `json`), `since` (default `7d`), `width` (text columns)",
        "data `workspace_report` (`content`: the page or the text; `report`: the document for json)"),
    Opcode.RETENTION: OpcodeDoc(
        "retention, admin (`ml admin retention`; HTTP `GET`/`POST /api/v1/admin/retention`)",
        "`run` (false: the dry run)", "data `retention` (settings, the plan, what was purged): docs/audit.md"),
    Opcode.USER_EXPORT: OpcodeDoc(
        "GDPR export of a user, admin (`ml admin user export`; HTTP `GET /api/v1/admin/users/{user}/export`)",
        "`user`", "data `user_export` (one list per section)"),
    Opcode.USER_ERASE: OpcodeDoc(
        "GDPR erase of a user, admin (`ml admin user erase`; HTTP `POST /api/v1/admin/users/{user}/erase`)",
        "`user`, `transfer_to`", "data `user_erase` (pseudonym, what changed, the agent.yaml entry to delete)"),
}
