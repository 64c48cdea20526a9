"""Package specs as pip and conda accept them, parsed into one typed value or refused.

:func:`parse_spec` takes one spec exactly as a person typed it (``pandas==2.0.0``,
``requests[socks]; python_version<"3.12"``, ``name @ https://...``, ``git+https://...``,
``./x.whl``, ``-e .``, ``-r reqs.txt``, ``--index-url URL``, conda's ``-c CHANNEL``,
``conda-forge/linux-64::numpy>=1.0``, ``numpy[channel=pytorch]``) and returns a
:class:`PackageSpec` whose ``kind`` says which form it was. Whether a form may be installed is the
decision engine's business (:mod:`fetchml_agent.policy.engine`); this module only says what it is.

What is not a valid spec is refused with :class:`~fetchml_agent.errors.InvalidArgument` and a
reason, never guessed at: non-ASCII characters (look-alike letters such as Cyrillic U+0435), control
characters and newlines, ``${VAR}`` expansion, unknown installer options, name patterns.
Requirements are parsed with ``packaging`` and names normalized by
:func:`~fetchml_agent.policy.names.normalize_name`.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.policy.names import dist_filename_parts, is_valid_channel, is_valid_name, normalize_name

__all__ = ["MAX_SPEC_LENGTH", "PackageSpec", "SpecKind", "name_from_filename", "parse_spec"]

MAX_SPEC_LENGTH = 2048


class SpecKind(enum.StrEnum):
    """Which form a spec was written in; the decision engine's source rules use these values."""

    NAME = "name"  # a PEP 508 requirement or a conda match spec naming a package
    DIRECT_URL = "direct_url"  # name @ url
    URL = "url"  # a bare URL to a wheel, sdist or conda archive
    VCS = "vcs"  # git+/hg+/svn+/bzr+ URLs
    LOCAL_PATH = "local_path"  # a file or a project directory
    EDITABLE = "editable"  # -e / --editable
    REQUIREMENTS_FILE = "requirements_file"  # -r, --requirement, conda --file, pip --group
    CONSTRAINTS_FILE = "constraints_file"  # pip -c, --constraint
    INDEX_OPTION = "index_option"  # --index-url, --extra-index-url, --find-links, ...
    LOCATION_OPTION = "location_option"  # --target, --user, --prefix, conda -n/-p
    CHANNEL_OPTION = "channel_option"  # conda -c CHANNEL, --use-local
    OPTION = "option"  # an installer option that changes nothing about where packages come from


@dataclass(frozen=True)
class PackageSpec:
    """One parsed spec. ``name`` is PEP 503-normalized, or ``None`` when the form names none.

    ``specifier`` is the version constraint as text (``""`` for any version; conda's own version
    syntax for conda specs); ``channel``/``subdir`` only for conda; ``option``/``value`` for
    option forms (``--index-url`` and its URL).
    """

    raw: str
    kind: SpecKind
    name: str | None = None
    specifier: str = ""
    extras: tuple[str, ...] = ()
    marker: str | None = None
    url: str | None = None
    channel: str | None = None
    subdir: str | None = None
    conda: bool = False
    option: str | None = None
    value: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.raw


_VCS = re.compile(r"^(git|hg|svn|bzr)\+[a-z0-9+.-]*:", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_ARCHIVE = re.compile(r"\.(whl|zip|tar|tar\.gz|tgz|tar\.bz2|tbz|tar\.xz|txz|tar\.lz|tlz|conda)$", re.IGNORECASE)
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte"}

# Options by installer: option -> (kind, takes a value).
_PIP_OPTIONS: dict[str, tuple[SpecKind, bool]] = {
    **{o: (SpecKind.INDEX_OPTION, True) for o in (
        "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "--index")},
    "--no-index": (SpecKind.INDEX_OPTION, False),
    **{o: (SpecKind.LOCATION_OPTION, True) for o in ("-t", "--target", "--prefix", "--root", "--src", "--python")},
    "--user": (SpecKind.LOCATION_OPTION, False),
    **{o: (SpecKind.REQUIREMENTS_FILE, True) for o in ("-r", "--requirement", "--group", "--requirements-from-script")},
    **{o: (SpecKind.CONSTRAINTS_FILE, True) for o in ("-c", "--constraint")},
    **{o: (SpecKind.EDITABLE, True) for o in ("-e", "--editable")},
    **{o: (SpecKind.OPTION, False) for o in (
        "--pre", "-U", "--upgrade", "--no-deps", "--force-reinstall", "--prefer-binary", "--require-hashes",
        "--no-require-hashes", "-q", "--quiet", "-v", "--verbose", "--no-cache-dir", "--dry-run", "-I",
        "--ignore-installed", "--no-build-isolation", "--only-final", "--all-releases", "--no-compile")},
    **{o: (SpecKind.OPTION, True) for o in (
        "--upgrade-strategy", "--only-binary", "--no-binary", "--hash", "-C", "--config-settings",
        "--use-feature", "--progress-bar")},
}
_CONDA_OPTIONS: dict[str, tuple[SpecKind, bool]] = {
    **{o: (SpecKind.CHANNEL_OPTION, True) for o in ("-c", "--channel")},
    "--use-local": (SpecKind.CHANNEL_OPTION, False),
    **{o: (SpecKind.LOCATION_OPTION, True) for o in ("-n", "--name", "-p", "--prefix")},
    "--file": (SpecKind.REQUIREMENTS_FILE, True),
    **{o: (SpecKind.OPTION, False) for o in (
        "-y", "--yes", "-q", "--quiet", "-v", "--verbose", "--override-channels", "--freeze-installed",
        "--update-deps", "--no-deps", "--only-deps", "-S", "--satisfied-skip-solve", "-d", "--dry-run",
        "--no-pin", "--strict-channel-priority", "--no-update-deps", "--update-all", "--update-specs")},
    "--solver": (SpecKind.OPTION, True),
}

# conda subdirs as they appear in ``channel/subdir::name``.
_SUBDIR = re.compile(r"^(noarch|(linux|osx|win|zos|freebsd|emscripten|wasi)-[a-z0-9_]+)\Z")
_CONDA_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.+-]*$", re.IGNORECASE)
_CONDA_VERSION = re.compile(r"^[A-Za-z0-9.*+!<>=,|_~ ()-]*\Z")
_CONDA_NAME_THEN_REST = re.compile(r"^(?P<name>[^\s=<>!~\[]+)(?P<rest>.*)$")
_CONDA_BRACKET = re.compile(r"^(?P<head>[^\[]*)\[(?P<body>[^\]]*)\](?P<tail>.*)$")
_CONDA_KEYS = {"channel", "subdir", "version", "build", "build_number", "name", "namespace",
               "md5", "sha256", "license", "license_family", "track_features", "features", "url", "fn"}


def _refuse(raw: str, reason: str) -> InvalidArgument:
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    return InvalidArgument(f"not a valid package spec {shown!r}: {reason}", spec=raw)


def _check_text(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidArgument(f"a package spec must be text, got {type(raw).__name__}")
    if not raw.strip():
        raise _refuse(raw, "it is empty")
    if len(raw) > MAX_SPEC_LENGTH:
        raise _refuse(raw, f"longer than {MAX_SPEC_LENGTH} characters")
    for pos, ch in enumerate(raw):
        if " " <= ch <= "~":
            continue
        if ch in _CONTROL_NAMES or unicodedata.category(ch) == "Cc":
            what = _CONTROL_NAMES.get(ch, f"the control character U+{ord(ch):04X}")
            raise _refuse(raw, f"it contains {what} at position {pos}; give one spec per argument")
        name = unicodedata.name(ch, "unnamed")
        raise _refuse(raw, f"it contains the non-ASCII character U+{ord(ch):04X} ({name}) at position {pos}; "
                           "package names and specs are ASCII, so retype it")
    if "${" in raw:
        raise _refuse(raw, "environment variables (${...}) are not expanded here; write the value itself")
    return raw.strip()


def name_from_filename(filename: str) -> str | None:
    """The normalized project name of a wheel, sdist or conda archive name, or ``None``."""
    parts = dist_filename_parts(filename)
    if parts is not None:
        return parts[0]
    if filename.lower().endswith((".conda", ".tar.bz2")):
        # conda archives: name-version-build.conda
        pieces = re.sub(r"\.(conda|tar\.bz2)$", "", filename, flags=re.IGNORECASE).rsplit("-", 2)
        if len(pieces) == 3 and _CONDA_NAME.match(pieces[0]):
            return normalize_name(pieces[0])
    return None


def _url_spec(raw: str, s: str, conda: bool) -> PackageSpec:
    parsed = urllib.parse.urlsplit(s)
    if _VCS.match(s):
        egg = urllib.parse.parse_qs(parsed.fragment).get("egg", [""])[0].split("[")[0]
        name = normalize_name(egg) if egg and is_valid_name(egg) else None
        return PackageSpec(raw, SpecKind.VCS, name=name, url=s, conda=conda)
    filename = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
    return PackageSpec(raw, SpecKind.URL, name=name_from_filename(filename), url=s, conda=conda)


def _looks_like_path(s: str) -> bool:
    if "://" in s or s.startswith("@"):
        return False  # a URL in the middle of text is a broken "name @ url", not a path
    return s.startswith((".", "/", "~")) or "/" in s or "\\" in s or bool(_ARCHIVE.search(s))


def _path_spec(raw: str, s: str, conda: bool) -> PackageSpec:
    filename = re.split(r"[/\\]", s.rstrip("/\\"))[-1]
    return PackageSpec(raw, SpecKind.LOCAL_PATH, name=name_from_filename(filename), url=s, conda=conda)


def _option_spec(raw: str, s: str, conda: bool) -> PackageSpec:
    table = _CONDA_OPTIONS if conda else _PIP_OPTIONS
    if s.startswith("--") and "=" in s.split(" ", 1)[0]:
        opt, value = s.split("=", 1)
    else:
        opt, _, value = s.partition(" ")
        if not value and not s.startswith("--") and len(opt) > 2 and opt[:2] in table:
            opt, value = opt[:2], opt[2:]  # -rreqs.txt, -cconda-forge
    value = value.strip()
    if opt not in table:
        installer = "conda" if conda else "pip"
        raise _refuse(raw, f"{opt} is not a {installer} install option this agent accepts")
    kind, takes_value = table[opt]
    if takes_value and not value:
        raise _refuse(raw, f"{opt} needs a value")
    if not takes_value and value:
        raise _refuse(raw, f"{opt} takes no value; give the rest as a separate spec")
    if kind is SpecKind.EDITABLE:
        inner = _parse(value, conda=False)
        return PackageSpec(raw, SpecKind.EDITABLE, name=inner.name, url=inner.url or value, option=opt, value=value)
    if kind is SpecKind.CHANNEL_OPTION:
        channel = value.rstrip("/") if value else "local"
        if not is_valid_channel(channel):
            raise _refuse(raw, f"{value!r} is not a conda channel name or URL")
        return PackageSpec(raw, kind, channel=channel, conda=True, option=opt, value=value or None)
    return PackageSpec(raw, kind, conda=conda, option=opt, value=value or None)


def _parse_pip(raw: str, s: str) -> PackageSpec:
    if _VCS.match(s) or _URL.match(s):
        return _url_spec(raw, s, conda=False)
    try:
        req = Requirement(s)
    except InvalidRequirement as exc:
        if _looks_like_path(s):
            return _path_spec(raw, s, conda=False)
        raise _refuse(raw, str(exc).splitlines()[0]) from None
    if _ARCHIVE.search(req.name):
        return _path_spec(raw, s, conda=False)
    name = normalize_name(req.name)
    extras = tuple(sorted(normalize_name(e) for e in req.extras))
    marker = str(req.marker) if req.marker else None
    if req.url:
        kind = SpecKind.VCS if _VCS.match(req.url) else SpecKind.DIRECT_URL
        return PackageSpec(raw, kind, name=name, extras=extras, marker=marker, url=req.url)
    return PackageSpec(raw, SpecKind.NAME, name=name, specifier=str(req.specifier), extras=extras, marker=marker)


def _conda_brackets(raw: str, body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in re.split(r",(?=(?:[^'\"]|'[^']*'|\"[^\"]*\")*$)", body):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _CONDA_KEYS:
            raise _refuse(raw, f"{item.strip()!r} is not a conda match-spec key=value (keys: channel, subdir, "
                               "version, build, ...)")
        fields[key] = value.strip().strip("'\"")
    return fields


def _parse_conda(raw: str, s: str) -> PackageSpec:
    if _URL.match(s) and "::" not in s.split("://", 1)[1]:
        return _url_spec(raw, s, conda=True)
    channel: str | None = None
    subdir: str | None = None
    if "::" in s:
        parts = s.split("::")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _refuse(raw, "expected channel::name or channel/subdir::name")
        channel, s = parts[0].strip(), parts[1].strip()
        head, _, last = channel.rpartition("/")
        if head and _SUBDIR.match(last):
            channel, subdir = head, last
    elif _looks_like_path(s):
        return _path_spec(raw, s, conda=True)
    fields: dict[str, str] = {}
    m = _CONDA_BRACKET.match(s)
    if m:
        if m.group("tail").strip():
            raise _refuse(raw, "nothing may follow the [key=value] part of a conda spec")
        fields = _conda_brackets(raw, m.group("body"))
        s = m.group("head").strip()
    if "url" in fields or "fn" in fields:
        url = fields.get("url") or fields["fn"]
        return PackageSpec(raw, SpecKind.URL, name=name_from_filename(url.rsplit("/", 1)[-1]), url=url, conda=True)
    m = _CONDA_NAME_THEN_REST.match(s)
    if not m:
        raise _refuse(raw, "expected a conda package name")
    name_text, rest = fields.get("name", m.group("name")), m.group("rest").strip()
    if any(c in name_text for c in "*?^$"):
        raise _refuse(raw, "a name pattern could match any package, blocked ones included; name one package")
    if not _CONDA_NAME.match(name_text):
        raise _refuse(raw, f"{name_text!r} is not a conda package name (letters, digits, '_', '.', '-', '+')")
    version = fields.get("version", rest.lstrip("="))
    if fields.get("build"):
        version = f"{version} {fields['build']}".strip()
    if not _CONDA_VERSION.match(version):
        raise _refuse(raw, f"{version!r} is not a conda version or build spec")
    channel = fields.get("channel", channel)
    subdir = fields.get("subdir", subdir)
    if channel is not None and channel != "*" and not is_valid_channel(channel.rstrip("/")):
        raise _refuse(raw, f"{channel!r} is not a conda channel name or URL")
    return PackageSpec(raw, SpecKind.NAME, name=normalize_name(name_text), specifier=version.strip(),
                       channel=channel.rstrip("/") if channel else None, subdir=subdir, conda=True)


def _parse(raw: str, *, conda: bool) -> PackageSpec:
    s = _check_text(raw)
    if s.startswith("-"):
        return _option_spec(raw, s, conda)
    return _parse_conda(raw, s) if conda else _parse_pip(raw, s)


@functools.lru_cache(maxsize=8192)
def _parse_cached(raw: str, conda: bool) -> PackageSpec | InvalidArgument:
    try:
        return _parse(raw, conda=conda)
    except InvalidArgument as exc:
        return exc


def parse_spec(raw: str, *, conda: bool = False) -> PackageSpec:
    """Parses one spec as pip (or, with ``conda=True``, conda) would read it.

    An option and its value may come as one string (``"--index-url URL"``, ``"-c conda-forge"``,
    ``"-e ."``). Raises :class:`InvalidArgument` (with the reason, and the spec in ``fields``)
    for anything that is not a form pip or conda accepts, or that this agent refuses to read.
    """
    if not isinstance(raw, str):
        raise InvalidArgument(f"a package spec must be text, got {type(raw).__name__}")
    result = _parse_cached(raw, conda)
    if isinstance(result, InvalidArgument):
        raise InvalidArgument(result.message, result.details, **result.fields)
    return result
