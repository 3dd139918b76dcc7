"""The shape of one failure reason: its name, its effect on the reader, its codes and its phrases."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Effect(StrEnum):
    """What a failure of a reason does to the reader it was sent to."""

    SUPPRESS = "suppress"  # the address is gone: no more mail to it
    SCORE = "score"  # it may pass: adds to the decaying bounce score
    NONE = "none"  # our side's or the content's fault: the reader is untouched, the editor is told


@dataclass(frozen=True)
class Rule:
    """One reason: RFC 3463 subject.detail codes and SMTP reply codes that name it, and the phrases MTAs write."""

    name: str
    effect: Effect
    description: str
    statuses: frozenset[str] = frozenset()
    replies: frozenset[int] = frozenset()
    phrases: tuple[str, ...] = ()  # regular expressions over the lower-cased, unfolded diagnostic
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.phrases:
            object.__setattr__(self, "_pattern", re.compile("|".join(f"(?:{phrase})" for phrase in self.phrases)))

    def says(self, text: str) -> bool:
        """True when the lower-cased diagnostic text uses one of this reason's phrases."""
        return self._pattern is not None and self._pattern.search(text) is not None


def rule(
    name: str,
    effect: Effect,
    description: str,
    statuses: str = "",
    replies: str = "",
    phrases: tuple[str, ...] = (),
) -> Rule:
    """A Rule from space-separated status subjects ("1.1 1.3") and reply codes ("551")."""
    return Rule(
        name,
        effect,
        description,
        frozenset(statuses.split()),
        frozenset(int(code) for code in replies.split()),
        phrases,
    )
