"""The audit chain, sans I/O: canonical encoding, the keyed digests, and the verifier.

Every audit event is one canonical JSON document (keys sorted, no spaces, UTF-8; its ``id`` is
its place in the chain) and one digest::

    digest[n] = HMAC-SHA-256(key, digest[n-1] || canonical(event[n]))      digest[0] = HMAC(key, GENESIS)

What a person is kept apart from what the chain covers: the acting user and the personal
details (free-text reasons, who was granted what) live in a separate ``personal`` JSON document
that the event commits to with ``personal = SHA-256(salt || personal)`` (a random 16-byte salt per
event). Editing the personal document breaks the commitment, editing the commitment breaks the
chain. A GDPR erase rewrites the personal document, drops the salt (so the old commitment can no
longer be tested against a guessed name) and adds ``seal = HMAC(key, "seal" || id || commitment
|| personal)``: the chain itself is untouched and still verifies.

Outside the chain, a signed **head** (last id and digest) catches a truncated tail, and a signed
**checkpoint** (the last purged id and its digest) lets a retention purge remove the oldest events
while the rest still verifies. :func:`verify_rows` walks the events in id order and reports the
first one that does not match and what kind of change explains it (:class:`Problem`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

__all__ = [
    "EDITED",
    "DELETED",
    "INSERTED",
    "REORDERED",
    "TRUNCATED",
    "KEY_MISMATCH",
    "PERSONAL_KEYS",
    "ChainKey",
    "Head",
    "Problem",
    "Row",
    "VerifyResult",
    "canonical",
    "check_end",
    "names_pattern",
    "personal_commit",
    "split_details",
    "verify_rows",
]

GENESIS = b"fetchml-audit-genesis-v1"

EDITED, DELETED, INSERTED, REORDERED, TRUNCATED, KEY_MISMATCH = (
    "edited", "deleted", "inserted", "reordered", "truncated", "key_mismatch")

#: Detail keys that always hold personal data (they go to the personal document).
PERSONAL_KEYS = frozenset({"reason", "requester", "requesters", "principal", "user", "users", "owner", "email",
                           "to", "from", "transfer_to", "subject"})

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            default=str)


def canonical(document: Any) -> str:
    """The one encoding the chain covers: sorted keys, no whitespace, non-ASCII kept as UTF-8."""
    return _ENCODER.encode(document)


def _plain(value: Any) -> Any:
    """Plain JSON values, as the event will read back (tuples are lists; NaN and inf become text)."""
    return _finite(json.loads(json.dumps(value, default=str)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


_NAME_CHARS = "A-Za-z0-9._@-"


def names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """A regex that finds any of ``names`` as a whole token (user names are ``[A-Za-z0-9._@-]`` runs)."""
    ordered = sorted({n for n in names if n}, key=len, reverse=True)
    if not ordered:
        return None
    alternatives = "|".join(re.escape(n) for n in ordered)
    return re.compile(f"(?<![{_NAME_CHARS}])(?:{alternatives})(?![{_NAME_CHARS}])")


def _walk(value: Any, names: re.Pattern[str] | None) -> tuple[bool, bool]:
    """``(plain, mentions)``: whether ``value`` is plain JSON already, and whether a string in it names someone."""
    if isinstance(value, str):
        return True, names is not None and names.search(value) is not None
    if value is None or isinstance(value, (bool, int)):
        return True, False
    if isinstance(value, float):
        return math.isfinite(value), False
    if isinstance(value, (list, dict)):
        plain, mentions = True, False
        for item in (value.values() if isinstance(value, dict) else value):
            p, m = _walk(item, names)
            plain, mentions = plain and p, mentions or m
        return plain and (not isinstance(value, dict) or all(isinstance(k, str) for k in value)), mentions
    return False, False


def split_details(details: Mapping[str, Any], names: re.Pattern[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(chained, personal)``: personal keys, and any value that mentions a user by name, go apart.

    Values come back as plain JSON (tuples as lists, other objects as text, NaN as ``"nan"``).
    """
    chained: dict[str, Any] = {}
    personal: dict[str, Any] = {}
    for key, value in details.items():
        plain, mentions = _walk(value, names)
        if not plain:
            value = _plain(value)
            mentions = names is not None and names.search(canonical(value)) is not None
        if key in PERSONAL_KEYS or mentions:
            personal[key] = value
        else:
            chained[key] = value
    return chained, personal


def personal_commit(salt: bytes, personal_text: str) -> str:
    return hashlib.sha256(salt + personal_text.encode("utf-8")).hexdigest()


class ChainKey:
    """The audit key and every MAC made with it (HMAC-SHA-256 with the pads computed once)."""

    def __init__(self, key: bytes) -> None:
        self.raw = key  # for the worker processes of a parallel verification
        block = key.ljust(64, b"\0") if len(key) <= 64 else hashlib.sha256(key).digest().ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.genesis = self.mac(GENESIS)
        self.key_id = self.mac(b"key-id").hex()[:16]

    def mac(self, *parts: bytes) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def link(self, prev: bytes, event_text: str) -> bytes:
        return self.mac(prev, event_text.encode("utf-8"))

    def head_mac(self, last_id: int, digest: bytes) -> bytes:
        return self.mac(b"head\x1f", str(last_id).encode(), b"\x1f", digest, b"\x1f", self.key_id.encode())

    def checkpoint_mac(self, through_id: int, digest: bytes, summary_text: str) -> bytes:
        return self.mac(b"checkpoint\x1f", str(through_id).encode(), b"\x1f", digest, b"\x1f",
                        summary_text.encode("utf-8"))

    def seal(self, event_id: int, commitment: str, personal_text: str) -> bytes:
        return self.mac(b"seal\x1f", str(event_id).encode(), b"\x1f", commitment.encode(), b"\x1f",
                        personal_text.encode("utf-8"))

    def account_mac(self, key_verifier: bytes) -> bytes:
        """Stands for an erased account's API key (its verifier, never its name) in ``erased_accounts``."""
        return self.mac(b"erased-account\x1f", key_verifier)


class Row(NamedTuple):
    """One stored event as the verifier reads it."""

    rowid: int
    seq: int | None  # the id inside the event document
    digest: bytes
    event: str
    salt: bytes | None
    personal: str
    commitment: str | None
    seal: bytes | None
    workspace_id: str | None


@dataclass(frozen=True)
class Head:
    last_id: int
    digest: bytes
    mac: bytes
    key_id: str


@dataclass(frozen=True)
class Problem:
    """The first event that does not match, and the kind of change that explains it."""

    kind: str
    id: int
    message: str
    workspace_id: str | None = None
    ids: tuple[int, int] | None = None  # a range of missing ids (deleted, truncated)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "message": self.message}
        if self.workspace_id is not None:
            out["workspace_id"] = self.workspace_id
        if self.ids is not None:
            out["missing"] = {"first": self.ids[0], "last": self.ids[1]}
        return out


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    first_bad: Problem | None = None
    first_id: int | None = None
    last_id: int | None = None
    workspace_events: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked,
                "first_bad": self.first_bad.to_dict() if self.first_bad else None,
                "first_id": self.first_id, "last_id": self.last_id, "notes": list(self.notes)}


def _personal_ok(key: ChainKey, row: Row) -> bool:
    if row.commitment is None:
        return False
    if row.seal is None:
        return row.salt is not None and personal_commit(row.salt, row.personal) == row.commitment
    return key.seal(row.rowid, row.commitment, row.personal) == row.seal


def _classify(key: ChainKey, behind: list[Row], row: Row, ahead: list[Row], expected: int, prev: bytes,
              head: Head | None) -> Problem:
    def chains(p: bytes, r: Row) -> bool:
        return key.link(p, r.event) == r.digest

    where = row.workspace_id
    if head is not None and row.rowid > head.last_id:
        return Problem(INSERTED, row.rowid, f"event {row.rowid} comes after the last signed event ({head.last_id}): "
                                            "it was added outside the agent", where)
    if row.seq is not None and row.seq != expected and all(r.seq != row.seq for r in behind):
        # A genuine event out of place chains from its true predecessor, found nearby (a copy of
        # an event already checked is an insertion, below).
        for other in [*behind, *ahead]:
            if other.seq == row.seq - 1 and chains(other.digest, row):
                return Problem(REORDERED, row.rowid,
                               f"event {row.seq} is stored at position {row.rowid}, before or after event "
                               f"{other.seq} at position {other.rowid}: events were reordered", where)
    if ahead and ahead[0].seq == expected and chains(prev, ahead[0]):
        return Problem(INSERTED, row.rowid, f"event {row.rowid} does not belong to the chain: the event after it "
                                            f"continues from event {expected - 1}", where)
    if row.seq is not None and row.seq == row.rowid and row.rowid > expected:
        return Problem(DELETED, expected, f"events {expected}–{row.rowid - 1} are missing: deleted"
                       if row.rowid - 1 > expected else f"event {expected} is missing: deleted",
                       where, (expected, row.rowid - 1))
    if row.seq == expected and row.rowid == expected and chains(prev, row) and not _personal_ok(key, row):
        return Problem(EDITED, row.rowid, f"event {row.rowid}: its personal fields (user, reasons) were changed", where)
    return Problem(EDITED, row.rowid, f"event {row.rowid}: its content or digest was changed", where)


def verify_rows(key: ChainKey, rows: Iterable[tuple[Any, ...]], *, start_id: int = 1,
                start_digest: bytes | None = None, head: Head | None, workspace_id: str | None = None,
                window: int = 64, check_head: bool = True) -> VerifyResult:
    """Walks ``rows`` (tuples in :class:`Row`'s field order, by id, after the latest checkpoint).

    ``start_id``/``start_digest``: where the chain resumes (1 and the genesis digest, or the
    checkpoint's); ``head``: the signed head, ``None`` when the table has none. Stops at the first
    problem. ``workspace_id`` only counts that workspace's events (the chain is global).
    ``check_head`` False checks a stretch of the chain only (one part of a parallel verification).
    """
    prev = key.genesis if start_digest is None else start_digest
    expected = start_id
    ws_events = 0
    behind: deque[tuple[Any, ...]] = deque(maxlen=window)
    inner, outer, sha = key._inner.copy, key._outer.copy, hashlib.sha256
    it: Iterator[tuple[Any, ...]] = iter(rows)
    # The hot loop: one HMAC (pads precomputed) and one SHA-256 per event, no calls it can avoid.
    for row in it:
        rowid, seq, digest, event, salt, personal, commitment, seal, ws = row
        h = inner()
        h.update(prev)
        h.update(event.encode())
        o = outer()
        o.update(h.digest())
        if (rowid == expected and seq == expected and o.digest() == digest and (
                sha(salt + personal.encode()).hexdigest() == commitment if seal is None and salt is not None
                else _personal_ok(key, Row(*row)))):
            if ws is not None and ws == workspace_id:
                ws_events += 1
            behind.append(row)
            prev = digest
            expected += 1
            continue
        ahead = [Row(*r) for r in islice(it, window)]
        problem = _classify(key, [Row(*r) for r in behind], Row(*row), ahead, expected, prev, head)
        checked = expected - start_id
        return VerifyResult(False, checked, problem, start_id if checked else None,
                            expected - 1 if checked else None, ws_events)
    checked = expected - start_id
    first_id = start_id if checked else None
    last = expected - 1
    result = VerifyResult(True, checked, None, first_id, last if checked else None, ws_events)
    if check_head:
        check_end(key, result, head, start_id, prev)
    return result


def check_end(key: ChainKey, result: VerifyResult, head: Head | None, start_id: int, prev: bytes) -> None:
    """The checks after the last event: the signed head exists, holds, and names that event."""
    last = start_id + result.checked - 1
    if head is None:
        if last >= start_id or start_id > 1:
            result.ok = False
            result.first_bad = Problem(TRUNCATED, last, "the signed head of the chain is missing: events after "
                                                        f"{last} may have been removed")
        return
    if head.key_id != key.key_id:
        result.ok = False
        result.first_bad = Problem(KEY_MISMATCH, head.last_id, f"the chain was signed with key {head.key_id}, not "
                                                               f"with this agent's key {key.key_id}")
    elif key.head_mac(head.last_id, head.digest) != head.mac:
        result.ok = False
        result.first_bad = Problem(EDITED, head.last_id, "the signed head of the chain was changed")
    elif head.last_id > last:
        result.ok = False
        missing = (last + 1, head.last_id)
        what = f"events {missing[0]}–{missing[1]} are" if missing[1] > missing[0] else f"event {missing[0]} is"
        result.first_bad = Problem(TRUNCATED, last + 1, f"{what} missing at the end of the chain: its tail was "
                                                        "truncated", ids=missing)
    elif head.digest != prev:
        result.ok = False
        result.first_bad = Problem(EDITED, last, f"event {last} does not match the signed head")
