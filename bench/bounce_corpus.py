"""Bounce truth over a corpus of real bounces: who is found, who would be suppressed, what a forgery does.

Reads each message as `newsletter inbound` does and prints, against the expected results:
- the share of expected recipients attributed (named by the reading),
- failures not expected to be hard (temporary, or our side's) that would suppress their reader if tied to our mail
  (must be 0),
- addresses named that are no expected recipient nor in the report's own recipient fields (must be 0),
- forged reports that changed a state: every sample ingested without our token (must be 0).

The corpus is the one in tests/corpus/flufl by default. Another one is a directory of .eml files with a JSON
file of expected results, {"file.eml": [{"recipient": "...", "reason": "...", "hardbounce": false}]}
(the shape of a Sisimai dump):

    python bench/bounce_corpus.py [--maildir DIR --expected FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from newsletter import database
from newsletter.bounces import FeedbackKind
from newsletter.inbound import ingest, read_message
from newsletter.models import Event
from newsletter.received import message_digest, parse
from newsletter.settings import Settings
from newsletter.subscriptions import add_subscriber

FLUFL = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "flufl"
NOT_FAILURES = ("delivered", "vacation")
RECIPIENT_FIELDS = ("original-recipient:", "final-recipient:", "x-failed-recipients:")


def flufl_expected() -> dict[str, list[dict[str, object]]]:
    """The in-repository corpus's expectations in the common shape: hard means "the address is gone"."""
    table = json.loads((FLUFL / "expected.json").read_text(encoding="utf-8"))
    return {
        f"{name}.txt": [
            {"recipient": address, "reason": entry["nature"], "hardbounce": entry["nature"] == "hard"}
            for address in entry["addresses"]
        ]
        for name, entry in table.items()
    }


def report_fields(raw: bytes) -> set[str]:
    """The addresses in the report's own recipient fields (Original-Recipient, Final-Recipient, X-Failed-...)."""
    found: set[str] = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.lower().startswith(RECIPIENT_FIELDS):
            found |= {
                part.strip("<>;, ").lower() for part in line.split(":", 1)[1].replace(";", " ").split() if "@" in part
            }
    return found


def measure(directory: Path, expected: dict[str, list[dict[str, object]]], settings: Settings) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, rows in sorted(expected.items()):
        raw = (directory / name).read_bytes()
        message = parse(raw)
        reading = read_message(message, settings, message_digest(message, raw))
        ours = {feedback.email.lower(): feedback for feedback in reading.feedback if feedback.email}
        wanted = {str(row["recipient"]).lower(): row for row in rows if row["reason"] not in NOT_FAILURES}
        counts["samples"] += 1
        counts["expected recipients"] += len(wanted)
        for address, row in wanted.items():
            feedback = ours.get(address)
            counts["attributed"] += feedback is not None
            if feedback is not None and feedback.kind == FeedbackKind.HARD_BOUNCE and not row["hardbounce"]:
                counts["suspend (disabled) suppressed" if row["reason"] == "suspend" else "temporary suppressed"] += 1
        fields = report_fields(raw)
        for address in ours:
            if address not in wanted:
                counts["named by the report's own fields" if address in fields else "wrong addresses"] += 1
    return counts


def forged(directory: Path, expected: dict[str, list[dict[str, object]]], settings: Settings) -> int:
    """State changes made by ingesting every sample without our token, each reader on the list."""
    engine = database.make_engine(settings)
    database.upgrade(engine)
    with database.transaction(engine) as session:
        for address in sorted({str(row["recipient"]).lower() for rows in expected.values() for row in rows}):
            try:
                add_subscriber(session, address)
            except Exception:  # an address the list refuses (invalid or a duplicate): nobody to change
                continue
        for name in sorted(expected):
            ingest(session, settings, (directory / name).read_bytes(), source="bench")
        return session.scalar(select(func.count()).select_from(Event).where(Event.kind == "status")) or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maildir", type=Path, default=None, help="A directory of .eml bounces.")
    parser.add_argument("--expected", type=Path, default=None, help="Expected results for --maildir (JSON).")
    arguments = parser.parse_args()
    directory, expected = FLUFL, flufl_expected()
    if arguments.maildir is not None:
        directory, expected = arguments.maildir, json.loads(arguments.expected.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            database_url=f"sqlite:///{scratch}/bench.db", secret_key="bench", from_address="editor@example.org"
        )
        counts = measure(directory, expected, settings)
        counts["forged reports that changed a state"] = forged(directory, expected, settings)
    share = counts["attributed"] / max(counts["expected recipients"], 1)
    print(f"corpus: {directory} ({counts['samples']} samples, {counts['expected recipients']} expected recipients)")
    print(f"expected recipients attributed: {counts['attributed']} ({share:.1%})")
    for key in (
        "temporary suppressed",
        "suspend (disabled) suppressed",
        "wrong addresses",
        "named by the report's own fields",
        "forged reports that changed a state",
    ):
        print(f"{key}: {counts[key]}")


if __name__ == "__main__":
    main()
