"""``ml jupyter build``: custom workspace images (opcode ``BUILD_IMAGE`` 0x60, streaming).

Every package is decided by the agent-wide package policy BEFORE anything is built (a denied
package raises :class:`PolicyDenied`, one that needs approval :class:`ApprovalRequired`); the
base must be in the runtime's allowed bases; pip inside the build installs through the agent's
filtering index (a build-only key, see ``PackageIndex.build_index_url``), so dependencies are
checked too. The build log streams as log packets. Runtimes that are no
:class:`~fetchml_agent.runtimes.base.ImageBuilder` (local, nomad) answer :class:`NotSupported`.
One audit event per build (``image.build``): ok, denied or error.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..errors import ApprovalRequired, FetchmlError, InvalidArgument, PolicyDenied
from ..policy.engine import decide
from ..policy.specs import parse_spec
from ..protocol.opcodes import Opcode
from ..runtimes.base import ImageBuilder, capability
from .calls import Call, Result
from .context import AgentContext
from .registry import operation

__all__ = ["build_image"]

_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True, "empty": False, "maxlength": 200},
    "base": {"type": "string", "required": True, "empty": False, "maxlength": 300},
    "packages": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string", "empty": False}},
    "gpu_support": {"type": "boolean", "default": False},
}


def _package_list(items: list[str]) -> list[str]:
    """``--packages`` text as package specs, each parsed; InvalidArgument (0x06) when the text
    does not split (an open quote) or a spec is not a requirement, before any runtime is asked."""
    packages: list[str] = []
    for item in items:
        try:
            packages.extend(shlex.split(item))
        except ValueError as exc:
            raise InvalidArgument(f"--packages {item!r}: cannot split it into package specs: {exc}",
                                  "separate specs with spaces; quote a spec that holds spaces") from None
    if not packages:
        raise InvalidArgument("--packages: name at least one package")
    for spec in packages:
        parse_spec(spec)
    return packages


@operation(Opcode.BUILD_IMAGE, routes=[("POST", "/api/v1/images")], schema=_SCHEMA)
async def build_image(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Build image ``name`` FROM ``base`` with ``packages``; answers ``{"image": tag, ...}``."""
    packages = _package_list(args["packages"])
    builder = capability(agent.runtime, ImageBuilder)
    details = {"image": args["name"], "base": args["base"], "packages": packages, "gpu_support": args["gpu_support"]}
    svc = agent.services.packages

    def check(specs: list[str]) -> None:
        for spec in specs:
            decide(spec, svc.global_policy).raise_unless_allowed()

    async def progress(line: str) -> None:
        await call.log((line + "\n").encode("utf-8", "replace"))

    try:
        with svc.index.build_index_url() as index_url:
            tag = await builder.build_image(
                args["name"],
                base=args["base"],
                packages=packages,
                check_packages=check,
                allowed_bases=builder.allowed_bases,
                progress=progress,
                gpu_support=args["gpu_support"],
                index_url=index_url,
            )
    except FetchmlError as exc:
        outcome = "denied" if isinstance(exc, (PolicyDenied, ApprovalRequired)) else "error"
        await agent.audit(call.user.name, "image.build", None, outcome, error=exc.message, **details)
        raise
    await agent.audit(call.user.name, "image.build", None, "ok", tag=tag, **details)
    return Result(f"built image {tag}: ml jupyter create NAME --image={tag}", "image", {"image": tag, **details})
