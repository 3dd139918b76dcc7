"""What inbound reports did: one count for a message, a webhook request or a whole mailbox."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsletter.bounces import Recorded


@dataclass
class Tally:
    """Reports recorded, already recorded, suppressing someone, ignored; the messages read, by verdict."""

    recorded: int = 0
    duplicates: int = 0
    suppressed: int = 0
    ignored: int = 0  # reports about no subscriber on the list, or of kinds that change nothing
    verdicts: Counter[str] = field(default_factory=Counter)  # messages read, by what they were; none for webhooks
    note: str = ""

    @classmethod
    def of(cls, results: Sequence[Recorded | None], *, verdict: str = "", ignored: int = 0, note: str = "") -> Tally:
        """The count of what `bounces.apply_all` did (None: about no subscriber), for one message or request."""
        found = [result for result in results if result is not None]
        return cls(
            recorded=sum(1 for result in found if not result.duplicate),
            duplicates=sum(1 for result in found if result.duplicate),
            suppressed=sum(1 for result in found if result.suppressed),
            ignored=ignored + len(results) - len(found),
            verdicts=Counter([verdict] if verdict else []),
            note=note,
        )

    @classmethod
    def message(cls, verdict: str, *, recorded: int = 0, duplicates: int = 0, note: str = "") -> Tally:
        """One message read that recorded no report of a subscriber (kept, ignored or an auto-reply)."""
        return cls(recorded=recorded, duplicates=duplicates, verdicts=Counter([verdict]), note=note)

    @property
    def messages(self) -> int:
        return sum(self.verdicts.values())

    @property
    def verdict(self) -> str:
        """What the one message counted here was (the most frequent, for several)."""
        return self.verdicts.most_common(1)[0][0] if self.verdicts else ""

    def add(self, other: Tally) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed
        self.ignored += other.ignored
        self.verdicts.update(other.verdicts)
