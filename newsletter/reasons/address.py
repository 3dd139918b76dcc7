"""Reasons about the reader's address itself: it does not exist, moved or was closed. These suppress at once."""

from __future__ import annotations

from newsletter.reasons.rule import Effect, rule

USER_UNKNOWN = rule(
    "userunknown",
    Effect.SUPPRESS,
    "the mailbox does not exist at the recipient's domain",
    statuses="1.1 1.3",  # RFC 3463 3.2: bad destination mailbox address, bad mailbox address syntax
    phrases=(
        r"user(name)? (is )?unknown",
        r"unknown (user|recipient|mailbox|local[- ]?part|e-?mail address)",
        r"no such (user|mailbox|recipient|address|person|account)",
        r"(user|recipient|mailbox|address|account)( [^ ]+)? (does not|doesn't|does ?n[o']t) exist",
        r"(user|recipient|mailbox|address)( [^ ]+)? (not found|not known|unknown)",
        r"(mailbox|recipient|address|user) (is )?(invalid|not valid)",
        r"invalid (recipient|mailbox|address|user)",
        r"not a valid (user|recipient|mailbox)",
        r"the email account that you tried to reach does not exist",
        r"recipient address rejected: (user unknown|unknown user|invalid user|access denied|undeliverable address)",
        r"recipient (rejected|unknown|not found|does not exist|is not local)",
        r"mailbox unavailable|mailbox not (found|present|available)|mailbox name not allowed",
        r"no mailbox (here|by that name|found)|there is no one at this address|not our customer",
        r"addressee unknown|bad destination mailbox|unrouteable address: user|badrcptto|not in my validrcptto",
        r"(this user|recipient) (doesn't|does not) have an? [^ ]+ account|not listed in (the )?([a-z]+ )?directory",
        r"no matches to nameserver query|does not have a final (email )?delivery point|invalid final delivery userid",
        r"(wrong|is) or no longer valid|no longer (valid|exists)|address (is )?no longer (in use|active)",
        r"resolver\.adr\.recipientnotfound|recipientnotfound|smtp; 550 #5\.1\.0 address rejected",
        r"utilisateur inconnu|destinataire inconnu|adresse (email )?(inconnue|invalide)|n'existe pas",  # French
        r"benutzer unbekannt|unbekannter (benutzer|empfänger)|empfänger unbekannt|existiert nicht",  # German
        r"usuario (desconocido|no existe|inexistente)|no existe (dicha persona|ese usuario)",  # Spanish
        r"utente (sconosciuto|inesistente)|nessun utente",  # Italian
        r"用户不存在|收件人不存在|邮箱不存在|收件人地址不存在|帳號不存在|宛先不明|存在しない",  # Chinese, Japanese
    ),
)

HOST_UNKNOWN = rule(
    "hostunknown",
    Effect.SUPPRESS,
    "the recipient's domain does not exist",
    statuses="1.2",  # RFC 3463 3.2: bad destination system address
    phrases=(
        r"host (or domain name )?(not found|unknown)(?!, try again)|unknown (host|domain)",  # "try again": DNS failed
        r"domain (does not exist|not found|name not found|must exist)|no such domain",
        r"name or service not known|nxdomain|non-existent domain",
        r"unroutable address|unrouteable address|mail domain mentioned in email address is unknown",
        r"recipient address rejected: (unknown domain|domain not found)",
    ),
)

HAS_MOVED = rule(
    "hasmoved",
    Effect.SUPPRESS,
    "the mailbox moved and mail to it is not forwarded",
    statuses="1.6",  # RFC 3463 3.2: destination mailbox has moved, no forwarding address
    replies="551",  # RFC 5321 4.2.3: user not local
    phrases=(r"has been replaced by|user not local|address (has )?(moved|changed)|mailbox has moved",),
)

SUSPEND = rule(
    "suspend",
    Effect.SUPPRESS,
    "the mailbox is disabled, suspended or closed",
    statuses="2.1",  # RFC 3463 3.3: mailbox disabled, not accepting messages
    replies="525",
    phrases=(
        r"(mailbox|account|user|address) (is |has been )?(disabled|suspended|deactivated|inactive|closed|terminated)",
        r"(disabled|suspended|inactive|deactivated|closed) (mailbox|account|user)",
        r"account has been disabled or discontinued|no longer accepts mail|mailbox is frozen",
        r"compte (désactivé|suspendu)|konto (deaktiviert|gesperrt)|cuenta (desactivada|suspendida)",
        r"账户已停用|帐号已冻结|账号被冻结|此用户已被停用",
    ),
)

NOT_ACCEPT = rule(
    "notaccept",
    Effect.SUPPRESS,
    "the recipient's domain accepts no mail at all (null MX)",
    statuses="1.10",  # RFC 7505 4.2: recipient address has null MX
    replies="521 556",  # RFC 7504: host does not accept mail; RFC 7505: domain does not accept mail
    phrases=(r"does not accept mail|null ?mx|accepts no mail",),
)

ADDRESS_RULES = (HAS_MOVED, NOT_ACCEPT, SUSPEND, HOST_UNKNOWN, USER_UNKNOWN)
