"""The one table of opcodes and packet types. ``docs/protocol.md`` documents each layout.

The seed defines ``0x0D``–``0x0F``; every other opcode is this project's and carries a JSON object
body (see :class:`~fetchml_agent.protocol.packets.JsonRequest`). Values are grouped by concern:
``0x20`` workspaces, ``0x30`` packages, ``0x40`` experiments, ``0x50`` access and audit,
``0x60`` images and operations.
"""

from __future__ import annotations

import enum

__all__ = ["Opcode", "PacketType", "STREAMING"]


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

    # Images and operations.
    BUILD_IMAGE = 0x60


# Opcodes whose answer is a stream: progress/log packets, optionally one data packet with the
# result, and always a final success or error packet. Every other opcode answers with exactly one
# packet: success, error or data.
STREAMING: frozenset[Opcode] = frozenset(
    {
        Opcode.START_JUPYTER,
        Opcode.CREATE_WORKSPACE,
        Opcode.RESTART_WORKSPACE,
        Opcode.RESET_WORKSPACE,
        Opcode.INSTALL_PACKAGE,
        Opcode.MONITOR_WORKSPACE,
        Opcode.BUILD_IMAGE,
        Opcode.SCALE_WORKSPACE,
    }
)
