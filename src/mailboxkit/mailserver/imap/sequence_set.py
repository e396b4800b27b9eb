"""Sequence sets: message sequence numbers and UID sets.

RFC 3501 §9 ``sequence-set``: ``(seq-number / seq-range) *("," ...)`` where
``seq-number = nz-number / "*"`` and a range covers every number between its two ends
"regardless of order" (RFC 3501 §9, ``seq-range``). ``*`` is the largest number in use: the
message count for sequence numbers, the highest UID for UID sets (RFC 3501 §6.4.8).

Implementation notes:

- ``*`` is represented as ``None`` in a :class:`SeqRange`; it is only resolved against the
  mailbox by :meth:`SequenceSet.resolve`, which the handler calls with the current largest
  number.
- ``$`` (RFC 5182 SEARCHRES) is :data:`SAVED`, a set with no ranges that names "the result
  the last ``SEARCH RETURN (SAVE)`` kept": only the selected mailbox's view knows which
  messages those are, so :meth:`MailboxView.resolve` reads it and every other method treats
  it as empty. RFC 5182 §4 allows ``$`` only alone, never inside a list.
- Numbers are unsigned 32-bit (RFC 3501 §9 ``number``); nz-numbers have no leading zero.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_NUMBER = 4_294_967_295
"""Largest IMAP ``number`` (RFC 3501 §9: unsigned 32-bit)."""

_NUMBER_OR_STAR = re.compile(rb"\*|[1-9][0-9]{0,9}")


@dataclass(frozen=True, slots=True)
class SeqRange:
    """One ``seq-number`` or ``seq-range``; ``None`` stands for ``*``."""

    first: int | None
    last: int | None

    def __post_init__(self) -> None:
        for number in (self.first, self.last):
            if number is not None and not 1 <= number <= MAX_NUMBER:
                raise ValueError(f"sequence number out of range: {number}")

    def bounds(self, largest: int) -> tuple[int, int]:
        """The range as ``(low, high)`` with ``*`` replaced by ``largest``."""
        low = largest if self.first is None else self.first
        high = largest if self.last is None else self.last
        return (low, high) if low <= high else (high, low)

    def __str__(self) -> str:
        first = "*" if self.first is None else str(self.first)
        if self.first == self.last:
            return first
        last = "*" if self.last is None else str(self.last)
        return f"{first}:{last}"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed ``sequence-set`` (RFC 3501 §9), kept as the client wrote it; ``saved`` for
    ``$`` (RFC 5182), which has no ranges."""

    ranges: tuple[SeqRange, ...]
    saved: bool = False

    def __post_init__(self) -> None:
        if bool(self.ranges) == self.saved:
            raise ValueError("a sequence set has at least one element, or is $ alone")

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compact set of the given numbers (sorted, deduplicated, runs as ranges)."""
        return cls(tuple(SeqRange(low, high) for low, high in _runs(numbers)))

    @property
    def uses_star(self) -> bool:
        """Whether ``*`` appears, i.e. the meaning depends on the mailbox's largest number."""
        return any(r.first is None or r.last is None for r in self.ranges)

    def largest_explicit(self) -> int:
        """The largest number written explicitly (0 if only ``*`` is used).

        RFC 3501 §9 (``seq-number``): a message sequence number above the message count is
        invalid; the handler compares this against the count before resolving.
        """
        explicit = [n for r in self.ranges for n in (r.first, r.last) if n is not None]
        return max(explicit, default=0)

    def resolve(self, largest: int) -> tuple[tuple[int, int], ...]:
        """Sorted, merged, inclusive intervals within ``1..largest``.

        For UID sets this gives RFC 3501 §6.4.8 semantics: ``559:*`` includes the highest
        UID even when that UID is below 559. An empty mailbox (``largest == 0``) resolves to
        no intervals.
        """
        intervals = sorted(r.bounds(largest) for r in self.ranges)
        merged: list[tuple[int, int]] = []
        for low, high in intervals:
            low, high = max(low, 1), min(high, largest)
            if low > high:
                continue
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return tuple(merged)

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set once ``*`` is ``largest``."""
        return any(low <= number <= high for low, high in self.resolve(largest))

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """Every number in the set, ascending, once ``*`` is ``largest``."""
        for low, high in self.resolve(largest):
            yield from range(low, high + 1)

    def __str__(self) -> str:
        return "$" if self.saved else ",".join(str(r) for r in self.ranges)


SAVED = SequenceSet((), saved=True)
"""``$``: the saved search result (RFC 5182 §2.1)."""


def parse_sequence_set(text: bytes) -> SequenceSet:
    """Parse ``sequence-set`` octets (RFC 3501 §9) or ``$`` (RFC 5182 §4); raise
    ``ValueError`` if malformed."""
    if text == b"$":
        return SAVED
    ranges: list[SeqRange] = []
    for element in text.split(b","):
        ends = element.split(b":")
        if len(ends) > 2 or not all(_NUMBER_OR_STAR.fullmatch(end) for end in ends):
            raise ValueError("invalid sequence set")
        numbers = [None if end == b"*" else int(end) for end in ends]
        ranges.append(SeqRange(numbers[0], numbers[-1]))
    return SequenceSet(tuple(ranges))


def compact_uids(numbers: Iterable[int]) -> str:
    """Render numbers as a compact ``sequence-set``: ``[1, 2, 3, 7]`` -> ``"1:3,7"``.

    The numbers are sorted and deduplicated first; used for ``VANISHED``, ``ESEARCH ALL``,
    ``COPYUID``/``APPENDUID`` (RFC 4315 §3, where both sets list UIDs in ascending order so
    the pairing is preserved) and ``MODIFIED``.
    """
    runs = _runs(numbers)
    if not runs:
        raise ValueError("a sequence set has at least one element")
    return ",".join(str(low) if low == high else f"{low}:{high}" for low, high in runs)


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for number in sorted(set(numbers)):
        if not 1 <= number <= MAX_NUMBER:
            raise ValueError(f"sequence number out of range: {number}")
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs
