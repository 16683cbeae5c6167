"""Wording -> reason table for bounce diagnostics (English and Japanese MTA phrases).

Order matters: the first matching rule wins. Phrases that blame the *sender* or the content
("sender address rejected: domain not found", "user is over quota") come before the
address-is-wrong phrases they contain words of; broad words ("blocked", "spam") come last so
that a precise "user unknown" is not hidden by a boilerplate link to a spam policy page.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Wording so explicit that it beats a contradicting status code (servers misuse 5.1.1 for
# "over quota" or rate limits; au/KDDI hides its domain filter behind "550 : User unknown").
_RAW_PRIORITY: list[tuple[str, str]] = [
    (r"\b5\d\d\b[\s:]*:\s+user unknown", "filtered"),
    (
        r"mailbox (is |was )?full|over ?quota|quota exceeded|exceeded (the |his |her |their )?"
        r"(storage|quota|mailbox)|mailbox (size )?(limit )?exceeded"
        r"|(メールボックス|受信箱|メールbox).{0,15}(一杯|いっぱい|満杯|容量|上限)"
        r"|容量.{0,10}(超過|超え|オーバー|不足)",
        "mailboxfull",
    ),
    (
        r"(sent|sending) (to )?too many (recipients|messages)|rate limit|receiving mail at a rate",
        "speeding",
    ),
    # A local delivery agent failing on the mailbox host (procmail):
    # its own "No such user" under 5.1.1 is about the LDA's lookup, not the address.
    (r"\bprocmail: |couldn't create \"?/|can't create (user )?output file", "mailererror"),
]

_RAW_RULES: list[tuple[str, str]] = [
    # --- sender-side or content problems that mention users/domains -----------------------
    (
        r"sender (address|domain) (rejected|must exist|not found|unknown|does not exist)"
        r"|domain of sender address .{0,80}does not exist|sender verify failed"
        r"|sender address is (invalid|not valid)|invalid sender|sender (is )?unknown"
        r"|unknown sender|mail from.{0,40}rejected|sender rejected|bad sender"
        r"|sender (address )?has null mx"
        # a mailing list refusing a post from a non-member: about the sender, not the list
        r"|(you are |sender is )?not a member of (this|the) (mailing )?list|members only"
        r"|only members (may|can) post|not allowed to post to this (mailing )?list",
        "rejected",
    ),
    (
        r"relay(ing)? (access )?(denied|not (permitted|allowed))|not permitted to relay"
        r"|unable to relay|we do not relay|relay not permitted|no relaying",
        "norelaying",
    ),
    (
        r"reverse (dns|lookup)|ptr record|rdns|no (ptr|reverse)|cannot find your hostname"
        r"|(client|your) host(name)? .{0,60}(does not|doesn't) resolve|\bhelo\b.{0,40}rejected",
        "requireptr",
    ),
    (
        r"\b(spf|dkim|dmarc)\b|sender policy framework|not (an )?authorized (sender|to send)"
        r"|authentication (failed|required)|unauthenticated",
        "authfailure",
    ),
    (r"starttls|tls (is )?required|encryption required", "failedstarttls"),
    (r"virus|malware|infected", "virusdetected"),
    # --- full / over quota (before "user" wording: "user is over quota") -----------------
    (
        r"mailbox (is |was )?full|mail ?box (is )?full|full mailbox|over ?quota|quota exceeded"
        r"|exceeded (the |his |her |their )?(storage|quota|mailbox)|exceeds? (the )?quota"
        r"|mailbox (size )?(limit )?exceeded|insufficient (disk )?(space|storage)"
        r"|not enough (storage|space)|disk quota|storage (limit|quota)|mailbox (is )?over"
        r"|(user|recipient|account)('s)? (mailbox )?(is )?over (the )?(quota|limit)"
        r"|too many messages in (the |this )?mailbox|maildir (over|quota)|mail(box|file) too big"
        r"|メールボックス.{0,10}(一杯|いっぱい|容量|満杯)|容量(が|を)?(超過|オーバー|不足)"
        r"|number of messages in recipient's mailbox exceeded|as their mailbox is full",
        "mailboxfull",
    ),
    (
        r"message (size )?(is )?(too (big|large)|exceeds|larger than)|size (limit|exceeds)"
        r"|message length exceeds|too large",
        "mesgtoobig",
    ),
    (
        r"(account|mailbox|user|address|recipient)( has been| is| was)?( temporarily)?"
        r" (disabled|suspended|deactivated|inactive|frozen|locked|blocked|expired|closed)"
        r"|inactive (account|mailbox|user)|disabled (account|mailbox|user)|account expired"
        r"|(account|mailbox) .{0,40} is (disabled|inactive|suspended)"
        r"|is not active|no longer active|suspended|(利用|使用|サービス)を?(停止|休止|中止)",
        "suspend",
    ),
    # --- the address is wrong: hard ---------------------------------------------------------
    (r"has moved|address (has )?changed|no forwarding address", "hasmoved"),
    (
        r"indicated no smtp service|(domain|host|system) does not accept mail|null mx"
        r"|does not accept e?-?mail|not accepting (any )?(network )?(e?-?mail|messages)"
        r"|accepts? no mail",
        "notaccept",
    ),
    # DNS trouble that may clear up: "try again" is the resolver saying it is temporary.
    (
        r"host not found, try again|malformed or unexpected name server reply"
        r"|name service error.{0,80}(try again|malformed|timed out|server failure)"
        r"|temporary dns|dns (timeout|servfail)",
        "networkerror",
    ),
    (
        r"my name was rejected|(helo|ehlo) .{0,40}(rejected|invalid|refused)|invalid (helo|ehlo)",
        "blocked",
    ),
    (
        r"host or domain name not found|(unknown|invalid) (host|domain)|host(name)? unknown"
        r"|host [a-z0-9.-]+\.[a-z]{2,} not found|(account or )?domain may not exist"
        r"|no such (domain|host)|domain (not found|does not exist|doesn't exist|is not valid)"
        r"|(host|domain) not found|unrouteable (mail )?domain|domain is not reachable"
        r"|unroutable (mail )?domain|dns (error|lookup failed)|mx (record )?(not found|lookup)"
        r"|no mx (record|host)|cannot resolve|can't resolve|nxdomain|no route to host for domain"
        r"|domain (name )?(lookup|resolution) failed|non-?existent (host|domain)"
        r"|all relevant mx records point to non-existent hosts|bad destination system address"
        r"|(ドメイン|ホスト).{0,15}(見つかりません|存在しません|不明)"
        # "553 mx.example.com does not exist": a host name (never an address) that is not
        r"|(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,} (?:does not|doesn't) exist",
        "hostunknown",
    ),
    (
        r"user ?unknown|unknown (user|recipient|local.?part|address|mailbox|account|alias)"
        r"|no such (user|mailbox|recipient|account|address|person|local user)"
        r"|(user|recipient|mailbox|account|address|addressee)( name)? "
        r"(does not|doesn't|did not|not) exists?"
        r"|(user|recipient|mailbox|account|address|addressee) (was |is )?(not found|unknown"
        r"|invalid|not valid|not listed)|(invalid|bad|unknown|non-?existent) "
        r"(recipient|mailbox|user|address|destination)"
        r"|not (a )?(valid|known) (user|recipient|mailbox|address)"
        r"|no mailbox (here )?(by that name|for)"
        r"|address (is )?(invalid|unknown)|recipient name is not recognized"
        r"|invalid (final delivery )?userid|unknown recipient"
        r"|(doesn't|does not) have an? .{0,40}account|account that you tried to reach does not"
        r"|email account (that )?you tried to reach (does not|doesn't) exist"
        r"|the e-?mail account does not exist|unrouteable address|no such address"
        r"|recipnotfound|recipient not found|user not found|not our customer"
        r"|no valid recipients for this mm|invalid user address"
        r"|is not a valid mailbox|unknown or illegal alias|address (does not|doesn't) exist"
        r"|no longer (valid|available|in use)|this address no longer accepts mail"
        r"|mailbox (is )?unavailable|recipient address rejected: access denied"
        r"|recipient address rejected[^a-z0-9]*(?:$|\(in reply to rcpt)"
        r"|not listed in (the )?(public name|domino directory|address book)"
        r"|(メールアドレス|アドレス|宛先|あて先|送信先|受信者|ユーザー?|アカウント)"
        r".{0,20}(見つかりません|存在しません|存在しない|不明|登録されていません)"
        r"|存在しない(メール)?アドレス|宛先不明",
        "userunknown",
    ),
    # --- generic soft reasons -------------------------------------------------------------
    (
        r"retry (time|timeout) (of .*)?(exceeded|expired)|message expired|delivery time expired"
        r"|(could not|couldn't) be delivered (for|within) \d+|queue(d)? too long|giving up"
        r"|time(d)? ?out.{0,40}(queue|deliver)|was not delivered within|expired after"
        r"|(undeliverable|undelivered) for \d+ (days|hours)|maximum time|too long in queue"
        r"|delivery (period|time) expired|has been delayed|delivery (is )?delayed"
        r"|(一定時間|規定時間|時間内|期限).{0,20}(配信|送信|配送|届け)",
        "expired",
    ),
    (r"too many (connections|sessions|concurrent)|connection (limit|rate)", "toomanyconn"),
    (
        r"rate limit|too many (messages|recipients|mails)|sending rate|try again later"
        r"|receiving mail at a rate",
        "speeding",
    ),
    (
        r"\bspam\b|junk|bulk mail|unsolicited|content (rejected|filter)|message content",
        "spamdetected",
    ),
    (
        r"\b(block(ed|list(ed)?)?|black ?list(ed)?|deny ?list(ed)?|dnsbl|rbl|spamhaus|barracuda)\b"
        r"|listed (in|on|at)|poor reputation|reputation|unwanted messages",
        "blocked",
    ),
    (
        r"filter(ed)?|rejected by .{0,40}(rule|policy)|not authorized to (receive|accept)"
        r"|受信拒否|拒否設定|指定受信|迷惑メール",
        "filtered",
    ),
    (
        r"network (is )?unreachable|connection (timed out|refused|reset|lost)|lost connection"
        r"|no route to host|timed? ?out|connection dropped",
        "networkerror",
    ),
    (
        r"mailer error|program exit|command (died|failed)|local delivery failed|pipe to",
        "mailererror",
    ),
    (r"syntax error|command unrecognized|bad sequence|line too long", "syntaxerror"),
    (r"system (is )?(full|overloaded|not accepting)|insufficient system storage", "systemfull"),
    (
        r"system error|internal error|server error|temporary (local )?(problem|failure)"
        r"|local error|too many hops|mail loop|routing loop|loops back",
        "systemerror",
    ),
]

# Catch-all words: weaker evidence than a status code's general meaning, so tried after it.
_RAW_GENERIC: list[tuple[str, str]] = [
    (
        r"polic(y|ies)|prohibited|not allowed|refused|access denied|forbidden|denied",
        "policyviolation",
    ),
    (r"rejected|not accepted|was not delivered|unable to deliver", "rejected"),
]

# Patterns are lowercase and run on lowercased text: several times faster than re.I.
PRIORITY_RULES = [(re.compile(p), r) for p, r in _RAW_PRIORITY]
SPECIFIC_RULES = PRIORITY_RULES + [(re.compile(p), r) for p, r in _RAW_RULES]
RULES = SPECIFIC_RULES + [(re.compile(p), r) for p, r in _RAW_GENERIC]
_TIERS = {"priority": PRIORITY_RULES, "specific": SPECIFIC_RULES, "all": RULES}

# Where in the SMTP dialogue the failing reply came: Postfix "(in reply to RCPT TO command)",
# Exim "error ... after RCPT TO:<a>", sendmail ">>> RCPT To:<a>" then "<<< 550 ...", m-FILTER
# "SMTP command" / "DATA", qmail "does not like recipient", Yahoo "[RCPT_TO]".
STAGE_RE = re.compile(
    r"in reply to (?:(?P<d1>(?:end of )?data)|(?P<r1>rcpt to)|(?P<m1>mail from)) command"
    r"|after (?:(?P<d2>(?:end of )?data)\b|(?P<r2>rcpt to|rcpt\b)|(?P<m2>mail from))"
    r"|^[ \t]*>>> ?(?:(?P<d3>data)|(?P<r3>rcpt to)|(?P<m3>mail from))\b[^\n]*\n[ \t]*<<< ?[45]\d\d"
    r"|smtp command\W{0,20}\n?\s*(?:(?P<d4>data)|(?P<r4>rcpt)|(?P<m4>mail))\b"
    r"|error following (?:(?P<d5>data)|(?P<r5>rcpt)|(?P<m5>mail)) command"
    r"|(?P<r6>does not like recipient|\[rcpt_to\]|most progress was rcpt to response)"
    r"|(?P<d6>does not like data|after the message body was sent)"
    # DragonFly "did not like our RCPT TO:", X3 "SMTP:RCPT host …"
    r"|did not like our (?:(?P<r7>rcpt to)|(?P<d7>data)|(?P<m7>mail from))"
    r"|\bsmtp:(?:(?P<r8>rcpt)|(?P<d8>data)|(?P<m8>mail))\b",
    re.I | re.M,
)
_STAGES = {"d": "data", "r": "rcpt", "m": "mail"}
_PIPELINED_RCPT_RE = re.compile(r"need rcpt|no valid recipients|rcpt first", re.I)


@lru_cache(maxsize=2048)  # the same diagnostic is asked about several times per message
def match_reason(text: str, tier: str = "all") -> str | None:
    """Reason of the first rule of a tier ("priority", "specific", "all") found in text."""
    if not text:
        return None
    flat = " ".join(text.split()).lower()
    for pattern, reason in _TIERS[tier]:
        if pattern.search(flat):
            return reason
    return None


# Explicit "no such account" statements stay user-unknown whatever the SMTP stage: a
# provider's own sentence about the account (Yahoo, Gmail) or RFC 5321's reply text for an
# unknown mailbox ("Requested action not taken: mailbox unavailable", which Microsoft
# sends with 5.5.0).
_EXPLICIT_NO_ACCOUNT_RE = re.compile(
    r"(doesn't|does not) have an? .{0,40}account"
    r"|address couldn't be found|requested action not taken:? (mailbox unavailable|no such user)"
    # Microsoft: "550 5.4.1 Recipient address rejected: Access denied" (directory lookup)
    r"|recipient address rejected: access denied"
    # au (KDDI) names the address when the mailbox does not exist; its filter says
    # "550 : User unknown" with no address (the first priority rule).
    r"|\b550:? <[^<>@\s]+@(?:[a-z0-9-]+\.)*(?:ezweb\.ne\.jp|au\.com)>:? user unknown",
    re.I,
)


# Text that says the *sender* (its address, host or reputation) was refused, or that the
# recipient chose not to receive it: never proof that the recipient's address is wrong,
# whatever status code (5.1.1...) the server put in front of it.
_SENDER_REFUSED: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"spamhaus|spamcop|barracuda|sorbs|blocked using|\b(?:dnsbl|rbl)\b"
            r"|block ?list(?:ed)?|black ?list(?:ed)?|deny ?list(?:ed)?"
            r"|(?:poor|bad|low|sender|ip|domain) reputation|reputation (?:of|is)"
            r"|(?:client|your|sending) (?:host|ip|server)\b.{0,60}(?:blocked|denied|refused|rejected)"
        ),
        "blocked",
    ),
    (
        re.compile(
            r"refused due to recipient preferences|recipient preferences"
            r"|(?:user|recipient) (?:refuses|does not wish|has chosen not) to (?:receive|accept)"
        ),
        "filtered",
    ),
    (
        re.compile(
            r"(?:sender|mail from|envelope from|from address)\b.{0,60}(?:access denied|not allowed"
            r"|denied|refused|rejected|blocked)|access denied.{0,30}\b(?:sender|mail from|your ip)"
        ),
        "rejected",
    ),
]


@lru_cache(maxsize=256)  # asked once per recipient about the same explanation
def sender_refused(text: str) -> str | None:
    """Reason when the text blames the sender or the recipient's choice, else None."""
    flat = " ".join((text or "").split()).lower()
    if not flat or _RECIPIENT_UNKNOWN_RE.search(flat):
        return None
    for pattern, reason in _SENDER_REFUSED:
        if pattern.search(flat):
            return reason
    return None


# Plain statements that the recipient does not exist: they keep a 5.1.x "user unknown"
# even next to a sender-policy boilerplate.
_RECIPIENT_UNKNOWN_RE = re.compile(
    r"user ?unknown|unknown (?:user|recipient|mailbox)|no such (?:user|mailbox|recipient)"
    r"|(?:user|mailbox|recipient|account|address) (?:does not|doesn't|not) exists?"
    r"|recipient not found|not found by smtp address lookup"
)


# "550 Rejected", "550 5.1.0 <a@b.jp>: Rejected.": a refusal that names nothing but the
# recipient (not "Client host rejected", "Sender rejected"...).
_BARE_REJECTION_RE = re.compile(
    r"(?:\b[45]\d\d(?:[ -][245]\.\d{1,3}\.\d{1,3})?(?P<named>\s+<?[^\s<>@]+@[^\s<>]+?>?:?)?"
    r"|(?P<bracket>>:?))\s+rejected\b\.?\s*(?:\(in reply to rcpt to command\)|$)",
    re.M,
)


def bare_rejection(text: str) -> str | None:
    """ "named" when the bare refusal names the recipient ("542 a@b Rejected", "<a@b>:
    Rejected"): the reply to RCPT TO, whatever else the report says; "plain" for a bare
    "550 Rejected"; None otherwise."""
    m = _BARE_REJECTION_RE.search((text or "").lower())
    if not m:
        return None
    return "named" if m.group("named") or m.group("bracket") else "plain"


# The report says the recipient's account exists but is switched off (au: "The user(s)
# account is disabled."): more precise than a "user unknown" reply quoted beside it.
_DISABLED_RE = re.compile(
    r"(?:account|mailbox)s?\)? (?:is|has been|was) (?:disabled|suspended|deactivated|inactive)",
    re.I,
)


def account_disabled(text: str) -> bool:
    return bool(_DISABLED_RE.search(text or ""))


# A mailbox host's own directory verdict, in the words of the product that looked the
# address up (Domino/Notes directories, Exchange's recipient resolution, IMail, Exim's
# router, Verizon's MMS gateway). Without a reply code or a dialogue stage, only these
# prove the address wrong; a bare "User unknown" in an unknown gateway's summary does not.
_DIRECTORY_VERDICT_RE = re.compile(
    r"not listed in (?:the )?(?:public name|domino directory|address book)"
    r"|recipient name is not recognized|invalid final delivery userid|unrouteable address"
    r"|no valid recipients for this mm|^[ \t]*unknown user: \S+@"
    # Gmail as the mailbox host; Japanese carriers' and ISPs' own notices
    r"|e-?mail account that you tried to reach does not exist"
    r"|(?:メールアドレス|アドレス|宛先|あて先|送信先|受信者|ユーザー?|アカウント)"
    r".{0,20}(?:見つかりません|存在しません|存在しない|登録されていません)"
    r"|存在しない(?:メール)?アドレス|宛先不明",
    re.I | re.M,
)


def directory_verdict(text: str) -> bool:
    return bool(_DIRECTORY_VERDICT_RE.search(text or ""))


@lru_cache(maxsize=256)  # asked once per recipient about the same explanation
def explicit_no_account(text: str) -> bool:
    return bool(_EXPLICIT_NO_ACCOUNT_RE.search(" ".join((text or "").split())))


@lru_cache(maxsize=256)  # asked once per recipient about the same explanation
def smtp_stage(text: str) -> str | None:
    """ "mail", "rcpt" or "data": the command the failing reply answered, None if not said.

    Sendmail transcripts that show pipelined RCPT failures after DATA ("Need RCPT") say
    nothing about the stage: the RCPT replies are read after DATA was sent.
    """
    found = smtp_stages(text)
    return found[0] if found else None


@lru_cache(maxsize=256)
def smtp_stages(text: str) -> tuple[str, ...]:
    """Every stage the text names, in order (a transcript of several dialogues names several)."""
    text = text or ""
    for candidate in (text, " ".join(text.split())):
        found = []
        for m in STAGE_RE.finditer(candidate):
            stage = _STAGES[next(k for k, v in m.groupdict().items() if v)[0]]
            if stage == "data" and _PIPELINED_RCPT_RE.search(m.string[m.end() :]):
                continue
            found.append(stage)
        if found:
            return tuple(found)
    return ()
