"""Reasons that may pass: a full mailbox, a server down for a while, a message that expired in a queue.

Each adds to the reader's decaying bounce score; only many of them, close together, make a reader `bounced`.
"""

from __future__ import annotations

from newsletter.reasons.rule import Effect, rule

MAILBOX_FULL = rule(
    "mailboxfull",
    Effect.SCORE,
    "the reader's mailbox is full or over its quota",
    statuses="2.2",  # RFC 3463 3.3: mailbox full
    replies="552",  # RFC 5321 4.5.3.1.10: exceeded storage allocation, temporary in practice
    phrases=(
        r"mailbox (is )?full|full mailbox|mailbox (size limit|quota) (exceeded|usage exceeded)",
        r"over ?(the )?(allowed |disk |mailbox |storage )?quota|quota (exceeded|violation|usage)|disk quota",
        r"exceed(s|ed|ing)? (its |their |the )?(mailbox |storage |disk |receiving )?(quota|storage allocation|limit)",
        r"(insufficient|not enough|not sufficient) (disk |storage )?space|no space left",
        r"mailfolder is full|user has too many messages|mailbox has exceeded",
        r"boîte (aux lettres )?pleine|boite du destinataire pleine|postfach (ist )?voll|buzón lleno|casella piena",
        r"邮箱已满|邮箱空间不足|信箱已满|容量超過|メールボックスがいっぱい",
    ),
)

EXPIRED = rule(
    "expired",
    Effect.SCORE,
    "the message waited in a queue until it expired",
    statuses="4.7",  # RFC 3463 3.5: delivery time expired
    phrases=(
        r"retry time(out)? (not reached|exceeded)|gave up|giving up|delivery time expired",
        r"message (was )?(delayed|expired|timed out)|could not be delivered (within|for) \d+",
        r"too long in (the )?queue|queue(d)? too long|maximum time in queue|expired after",
        r"has not been delivered .* for \d+ (hours|days)|still (being )?retr(y|ied)|will (continue to|keep) tr(y|ying)",
    ),
)

SYSTEM_FULL = rule(
    "systemfull",
    Effect.SCORE,
    "the receiving system is out of disk space",
    statuses="3.1",  # RFC 3463 3.4: mail system full
    replies="452",  # RFC 5321 4.2.3: insufficient system storage
    phrases=(r"insufficient system storage|mail system full|system (disk )?full",),
)

NETWORK_ERROR = rule(
    "networkerror",
    Effect.SCORE,
    "the receiving server could not be reached (DNS, routing, connection, loop)",
    statuses="4.1 4.2 4.5 4.6",  # RFC 3463 3.5: no answer, bad connection, congestion, routing loop
    phrases=(
        r"connection (refused|timed out|reset|dropped)|no route to host|network is unreachable",
        r"(mail|routing|message) loop|looping|could not find a gateway|too many hops|hop count exceeded",
        r"name server timeout|dns (lookup|error|failure)",
        r"try again|lost connection|host not found, try again",
    ),
)

SYSTEM_ERROR = rule(
    "systemerror",
    Effect.SCORE,
    "the receiving system failed (misconfiguration, crash, directory server down)",
    statuses="3.2 3.5 4.3 2.4 5.5",  # RFC 3463 3.4-3.6: system not accepting, misconfigured, directory failure
    replies="451 421",
    phrases=(
        r"local error|server error|system error|internal error|temporary (failure|error|problem)",
        r"service (not available|unavailable)|try again later|local configuration error|resources temporarily",
        r"mailing list expansion problem",
    ),
)

MAILER_ERROR = rule(
    "mailererror",
    Effect.SCORE,
    "the receiving host's delivery program failed",
    phrases=(r"\bmailer error|unknown mailer|procmail|command (died|failed) with status|x-unix;",),
)

FILTERED = rule(
    "filtered",
    Effect.SCORE,
    "the reader's own filter or settings refused the message",
    phrases=(
        r"filtered|rejected by (the )?(recipient|user)|user (has )?(refused|rejected|blocked)|recipient (has )?"
        r"(refused|rejected|blocked|does not want)|not accepting mail from|address(ee)? refuses",
        r"recipient preferences|refused by the recipient",
    ),
)

ON_HOLD = rule(
    "onhold",
    Effect.SCORE,
    "the report names no cause yet: held for a later decision",
    phrases=(r"on hold|deferred|greylist|graylist|try later",),
)

UNDEFINED = rule("undefined", Effect.SCORE, "the report names no cause we recognize")

TRANSIENT_RULES = (MAILBOX_FULL, SYSTEM_FULL, EXPIRED, MAILER_ERROR, NETWORK_ERROR, SYSTEM_ERROR, FILTERED, ON_HOLD)
