"""The one table of what each workspace role may do inside JupyterLab (docs/access.md shows it).

Entries are Jupyter Server's own authorization pairs, ``(action, resource)``, as its
``Authorizer.is_authorized(handler, user, action, resource)`` receives them: actions ``read``,
``write`` and ``execute``; resources ``contents``, ``kernels``, ``sessions``, ``terminals``, ...
One resource is this project's: ``notebooks``, the narrower right to change an existing notebook
(save it, edit it live in collaboration) that the workspace extension asks for instead of
``write contents`` when that is all a request does. Roles are cumulative, in rising order; the
role names and their order are those of :mod:`fetchml_agent.service.access`.

The agent computes a person's allowed pairs from this table and sends them to the workspace's
Jupyter Server with the answer to "who is this credential"; the server enforces them and never
holds a table of its own.
"""

from __future__ import annotations

from ..service.access import ROLES

__all__ = [
    "DESCRIPTIONS",
    "JUPYTER_TABLE",
    "ROLE_ORDER",
    "SYSTEM_PERMISSIONS",
    "Permission",
    "permissions_for",
    "role_needed",
]

Permission = tuple[str, str]  # (action, resource)

ROLE_ORDER: tuple[str, ...] = tuple(sorted(ROLES, key=ROLES.__getitem__))

# What each role adds to the one below it.
_ADDS: dict[str, tuple[Permission, ...]] = {
    "viewer": (
        ("read", "api"),  # server status, who am I
        ("read", "contents"),  # open and list files and notebooks (with their outputs), download
        ("read", "kernels"),  # see which kernels run
        ("read", "kernelspecs"),
        ("read", "sessions"),
        ("read", "nbconvert"),  # export / download as
        ("read", "config"),  # the frontend's server-side settings
        ("read", "lsp"),
        ("execute", "events"),  # subscribe to the server's event stream (live collaboration state)
        ("write", "csp"),  # browsers report Content-Security-Policy violations
    ),
    "collaborator": (
        ("write", "notebooks"),  # save and live-edit existing notebooks
        ("write", "kernels"),  # start, restart, interrupt, shut down kernels
        ("execute", "kernels"),  # run code (the kernel WebSocket)
        ("write", "sessions"),  # attach a notebook to a kernel
        ("execute", "lsp"),
    ),
    "editor": (
        ("write", "contents"),  # create, upload, rename, copy, delete files; save any file
        ("read", "terminals"),
        ("write", "terminals"),
        ("execute", "terminals"),
        ("write", "config"),
    ),
    "owner": (
        ("write", "server"),  # shut the JupyterLab server down
    ),
}

DESCRIPTIONS: dict[Permission, str] = {
    ("read", "api"): "server status and identity",
    ("read", "contents"): "open and list files and notebooks with their outputs; download",
    ("read", "kernels"): "list running kernels",
    ("read", "kernelspecs"): "list kernel types",
    ("read", "sessions"): "list notebook sessions",
    ("read", "nbconvert"): "export a notebook (download as)",
    ("read", "config"): "read the frontend's server-side settings",
    ("read", "lsp"): "language-server status",
    ("execute", "events"): "follow the server's event stream (collaboration presence)",
    ("write", "csp"): "report Content-Security-Policy violations (browsers do this)",
    ("write", "notebooks"): "save and live-edit existing notebooks",
    ("write", "kernels"): "start, restart, interrupt and shut down kernels",
    ("execute", "kernels"): "run code in a kernel",
    ("write", "sessions"): "attach a notebook to a kernel",
    ("execute", "lsp"): "use language servers (completion, diagnostics)",
    ("write", "contents"): "create, upload, rename, copy and delete files; save any file",
    ("read", "terminals"): "list terminals",
    ("write", "terminals"): "open and close terminals",
    ("execute", "terminals"): "type into a terminal",
    ("write", "config"): "change the frontend's server-side settings",
    ("write", "server"): "shut the JupyterLab server down",
}

JUPYTER_TABLE: dict[str, frozenset[Permission]] = {}
_acc: set[Permission] = set()
for _role in ROLE_ORDER:
    _acc.update(_ADDS[_role])
    JUPYTER_TABLE[_role] = frozenset(_acc)
del _acc, _role

if set(_ADDS) != set(ROLES) or set(DESCRIPTIONS) != set().union(*JUPYTER_TABLE.values()):
    raise RuntimeError("fetchml_agent.access.roles: the role table and service.access.ROLES disagree")

# The agent's own identity in a workspace server (its readiness probe and `ml jupyter optimize`
# use the server credential): status, and listing and shutting down idle kernels; nothing else.
SYSTEM_PERMISSIONS: frozenset[Permission] = frozenset(
    {("read", "api"), ("read", "kernels"), ("write", "kernels"), ("read", "sessions")}
)


def permissions_for(role: str) -> frozenset[Permission]:
    """The pairs ``role`` may do in JupyterLab (empty for an unknown role)."""
    return JUPYTER_TABLE.get(role, frozenset())


def role_needed(action: str, resource: str) -> str | None:
    """The lowest role allowed ``(action, resource)``; ``None`` when no role is."""
    for role in ROLE_ORDER:
        if (action, resource) in JUPYTER_TABLE[role]:
            return role
    return None
