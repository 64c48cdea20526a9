"""A local workspace's disk size limit: its directory is an ext4 filesystem of that size, in a
sparse image file under the agent's data dir, loop-mounted on the workspace's directory.

Works on any Linux host where the agent runs as root (no quota-capable filesystem needed);
elsewhere :func:`attach` says why the size is not enforced. Only a directory the agent created
(the managed ``data_dir/workspaces/NAME``) and that is still empty gets one: mounting over a
directory that holds files would hide them. A larger size grows the filesystem in place; a
smaller one is refused by ext4 and said. :func:`detach` (on delete) unmounts it and removes the
image. Stopping a workspace keeps it mounted, so its files stay where they were.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["attach", "detach"]

_TOOLS = ("mkfs.ext4", "mount", "umount", "resize2fs")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def _size_mb(image: Path) -> int:
    return image.stat().st_size // 2**20


def attach(image: Path, mountpoint: Path, size_mb: int) -> str:
    """Make ``mountpoint`` a filesystem of ``size_mb`` MiB; returns what ``limits`` says for disk."""
    if os.geteuid() != 0:
        return "not enforced: a size limit needs the agent to run as root here (a loop-mounted filesystem)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"not enforced: {', '.join(missing)} not found on this host"
    how = f"enforced: {size_mb} MiB, a loop-mounted ext4 filesystem"
    try:
        if os.path.ismount(mountpoint):
            have = _size_mb(image) if image.exists() else None
            if have is None or have == size_mb:
                return how
            if size_mb < have:
                return f"enforced at {have} MiB: a workspace's filesystem grows but does not shrink (asked {size_mb} MiB)"
            os.truncate(image, size_mb * 2**20)
            device = next((ln.split()[0] for ln in Path("/proc/mounts").read_text().splitlines()
                           if ln.split()[1] == str(mountpoint)), None)
            if device and device.startswith("/dev/loop"):
                _run("losetup", "-c", device)
            _run("resize2fs", device or str(image))
            return how
        if not image.exists():
            if any(mountpoint.iterdir()):
                return "not enforced: the workspace's directory already held files when the size was asked for"
            image.parent.mkdir(parents=True, exist_ok=True)
            with open(image, "wb") as fh:
                fh.truncate(size_mb * 2**20)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
            fresh = True
        else:
            fresh = False
        _run("mount", "-o", "loop,nosuid,nodev", str(image), str(mountpoint))
        if fresh:
            (mountpoint / "lost+found").rmdir()  # an empty ext4 directory users should not see
        return how
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        why = detail.decode(errors="replace").strip() or str(exc)
        return f"not enforced: mounting a {size_mb} MiB filesystem failed ({why[:200]})"


def detach(image: Path, mountpoint: Path) -> None:
    """Unmount ``mountpoint`` (lazily, should something still hold it) and delete ``image``."""
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=60)
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=60)
    image.unlink(missing_ok=True)
