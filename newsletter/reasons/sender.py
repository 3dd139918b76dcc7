"""Reasons on our side or the content's: the relay's limits, our reputation or authentication, the message.

None of them is the reader's doing: the reader stays active, and the editor is shown what to fix.
"""

from __future__ import annotations

from newsletter.reasons.rule import Effect, rule

AUTH_FAILURE = rule(
    "authfailure",
    Effect.NONE,
    "our mail failed SPF, DKIM or DMARC checks at the receiver",
    statuses="7.20 7.21 7.22 7.23 7.24 7.26 7.29",  # RFC 7372: DKIM, SPF and DMARC failures
    phrases=(
        r"\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|authentication (check )?fail|sender policy framework",
        r"this mail is unauthenticated|does not pass authentication",
    ),
)

SECURITY_ERROR = rule(
    "securityerror",
    Effect.NONE,
    "a TLS or SMTP AUTH failure between our relay and the next server",
    statuses="7.3 7.4 7.5 7.6 7.7 7.8 7.9 7.10 7.11 7.12 7.13 7.14 7.30",  # RFC 3463 3.8, RFC 4954, RFC 8689
    replies="454 530 534 535 538",  # RFC 4954 6, RFC 3207 4
    phrases=(
        r"authentication (required|failed|credentials invalid)|must (issue a starttls|authenticate)",
        r"tls (is )?(required|not available)|starttls|encryption (required|needed)|relay access denied.*auth",
    ),
)

REQUIRE_PTR = rule(
    "requireptr",
    Effect.NONE,
    "our sending IP has no reverse DNS name, or one that does not match",
    statuses="7.25",  # RFC 7372 3.3: reverse DNS validation failed
    phrases=(
        r"reverse dns|\bptr\b|no (reverse|rdns)|rdns|cannot find your hostname",
        r"client host rejected: cannot find",
    ),
)

NO_RELAYING = rule(
    "norelaying",
    Effect.NONE,
    "a server refused to relay our mail: a routing or relay setup fault",
    phrases=(r"relay(ing)? (access )?(denied|not permitted|prohibited|not allowed)|not permitted to relay|open relay",),
)

SPEEDING = rule(
    "speeding",
    Effect.NONE,
    "we sent too fast: the receiver limits our rate",
    phrases=(
        r"rate limit|ratelimit|too (fast|many (messages|emails|mails))|sending rate|unusual rate",
        r"receiving mail at a rate|at a rate that prevents",
        r"try again later.*(rate|volume)|exceeded .*(rate|sending) limit|throttl",
    ),
)

TOO_MANY_CONN = rule(
    "toomanyconn",
    Effect.NONE,
    "too many connections or recipients at once from our relay",
    statuses="3.2 5.3",  # system not accepting network messages; too many recipients (RFC 3463 3.6)
    phrases=(r"too many (connections|recipients|concurrent)|connection (limit|rate) exceeded",),
)

MESG_TOO_BIG = rule(
    "mesgtoobig",
    Effect.NONE,
    "the message is larger than the receiving system takes",
    statuses="3.4",  # RFC 3463 3.4: message too big for system
    replies="523",  # RFC 5248: message too big
    phrases=(
        r"message (is )?(too (big|large)|size exceeds|exceeds (the )?(maximum|size))|size limit|too large",
        r"message length exceeds|exceed(s|ed)? (the )?maximum (inbound )?(message )?size|邮件(大小)?超过|メールサイズ",
    ),
)

EXCEED_LIMIT = rule(
    "exceedlimit",
    Effect.NONE,
    "the message exceeds a limit the recipient's mailbox sets",
    statuses="2.3",  # RFC 3463 3.3: message length exceeds administrative limit
    phrases=(r"exceeds (the )?(fixed |recipient'?s? )?(maximum )?(message )?size|administrative limit",),
)

VIRUS_DETECTED = rule(
    "virusdetected",
    Effect.NONE,
    "the message was taken for a virus or malware",
    phrases=(r"virus|malware|infected|malicious",),
)

SPAM_DETECTED = rule(
    "spamdetected",
    Effect.NONE,
    "the content was judged to be spam",
    phrases=(
        r"\bspam\b|unsolicited|junk mail|bulk mail|content (filter|rejected)|message (content )?rejected",
        r"looks like (spam|junk)|scored too high|high probability|垃圾邮件|迷惑メール",
    ),
)

BAD_REPUTATION = rule(
    "badreputation",
    Effect.NONE,
    "our sending IP or domain has a poor reputation at the receiver",
    phrases=(r"reputation|sender score|ip (is )?(blocked|listed)|poor sending|low reputation",),
)

BLOCKED = rule(
    "blocked",
    Effect.NONE,
    "the receiver blocks our sending IP or domain (a blocklist, a firewall)",
    phrases=(
        r"block ?list|black ?list|blocked|\bbanned\b|\brbl\b|\bdnsbl\b|spamhaus|spamcop|barracuda|sorbs",
        r"access denied|client host rejected|connection refused by|not accepting (mail|connections) from",
        r"refused to talk|\bdenied\b.*\bip\b|\bip\b.*\bdenied\b",
    ),
)

POLICY_VIOLATION = rule(
    "policyviolation",
    Effect.NONE,
    "the receiver's policy refused the message (its content or kind)",
    statuses="7.2 7.15 7.16 7.17 7.28",  # RFC 3463 3.8 and later registrations: policy refusals
    phrases=(r"policy|not authori[sz]ed|prohibited|not allowed|administratively",),
)

CONTENT_ERROR = rule(
    "contenterror",
    Effect.NONE,
    "the message's format or encoding was refused",
    statuses="6.0 6.1 6.2 6.4 6.5 6.6",  # RFC 3463 3.7: media errors
    phrases=(r"content (type|encoding)|mime|invalid (header|content)|header (is )?(too long|invalid)",),
)

NOT_COMPLIANT_RFC = rule(
    "notcompliantrfc",
    Effect.NONE,
    "the message breaks an RFC the receiver enforces (duplicate headers, bare line feeds)",
    phrases=(r"rfc ?5322|rfc ?2822|not (rfc|standard) compliant|multiple .* headers|bare (lf|line ?feed)",),
)

UNSUPPORTED = rule(
    "unsupported",
    Effect.NONE,
    "a server on the way lacks an extension the message needs (SMTPUTF8, 8BITMIME)",
    statuses="3.3 6.3 6.7 6.8 6.9",  # RFC 3463 3.4 features; RFC 6531 3.7.5: non-ASCII address not permitted
    phrases=(r"smtputf8|8bitmime|utf-?8 (not|is not) (supported|allowed)|non-ascii|not capable",),
)

REJECTED = rule(
    "rejected",
    Effect.NONE,
    "our envelope sender was refused",
    statuses="1.7 1.8",  # RFC 3463 3.2: bad sender's mailbox address syntax, bad sender's system address
    phrases=(
        r"sender (address )?(rejected|refused|denied|not allowed|verify failed|domain)|mail from.*rejected",
        r"domain of sender address|sender verification|envelope (sender|from)",
    ),
)

SYNTAX_ERROR = rule(
    "syntaxerror",
    Effect.NONE,
    "our relay sent a command the server did not understand",
    statuses="5.1 5.2 5.4 5.6",  # RFC 3463 3.6: invalid command, syntax error, invalid arguments
    replies="500 501 502 503 504 555",  # RFC 5321 4.2.3
    phrases=(r"syntax error|command (not )?(recognized|implemented|unrecognized)|bad sequence",),
)

SENDER_RULES = (
    AUTH_FAILURE,
    SECURITY_ERROR,
    REQUIRE_PTR,
    NO_RELAYING,
    SPEEDING,
    TOO_MANY_CONN,
    EXCEED_LIMIT,
    MESG_TOO_BIG,
    VIRUS_DETECTED,
    SPAM_DETECTED,
    BAD_REPUTATION,
    UNSUPPORTED,
    REJECTED,
    SYNTAX_ERROR,
    NOT_COMPLIANT_RFC,
    CONTENT_ERROR,
    BLOCKED,
    POLICY_VIOLATION,
)

# The ones about the message itself (its size, content or form), not about our relay or reputation.
CONTENT_REASONS = frozenset(
    rule.name
    for rule in (
        EXCEED_LIMIT,
        MESG_TOO_BIG,
        VIRUS_DETECTED,
        SPAM_DETECTED,
        NOT_COMPLIANT_RFC,
        CONTENT_ERROR,
        POLICY_VIOLATION,
    )
)
