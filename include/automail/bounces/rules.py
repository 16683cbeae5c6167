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
]

_RAW_RULES: list[tuple[str, str]] = [
    # --- sender-side or content problems that mention users/domains -----------------------
    (
        r"sender (address|domain) (rejected|must exist|not found|unknown|does not exist)"
        r"|domain of sender address .{0,80}does not exist|sender verify failed"
        r"|sender address is (invalid|not valid)|invalid sender|sender (is )?unknown"
        r"|unknown sender|mail from.{0,40}rejected|sender rejected|bad sender"
        r"|sender (address )?has null mx",
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
        r"|does not accept e?-?mail|not accepting (any )?(e?-?mail|messages)|accepts? no mail",
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
        r"|no such (domain|host)|domain (not found|does not exist|doesn't exist|is not valid)"
        r"|(host|domain) not found|unrouteable (mail )?domain|domain is not reachable"
        r"|unroutable (mail )?domain|dns (error|lookup failed)|mx (record )?(not found|lookup)"
        r"|no mx (record|host)|cannot resolve|can't resolve|nxdomain|no route to host for domain"
        r"|domain (name )?(lookup|resolution) failed|non-?existent (host|domain)"
        r"|all relevant mx records point to non-existent hosts|bad destination system address"
        r"|(ドメイン|ホスト).{0,15}(見つかりません|存在しません|不明)",
        "hostunknown",
    ),
    (
        r"user ?unknown|unknown (user|recipient|local.?part|address|mailbox|account|alias)"
        r"|no such (user|mailbox|recipient|account|address|person|local user)"
        r"|(user|recipient|mailbox|account|address|addressee)( name)? "
        r"(does not|doesn't|did not) exist"
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
        r"|not listed in (the )?(public name|domino directory|address book)"
        r"|(メールアドレス|アドレス|宛先|あて先|送信先|受信者|ユーザー?|アカウント)"
        r".{0,20}(見つかりません|存在しません|存在しない|不明|登録されていません)"
        r"|存在しない(メール)?アドレス|宛先不明|ディレクトリ.{0,10}(見つかりません|ありません)",
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

# The reply came after the message body was sent: the recipient had been accepted at RCPT.
_AFTER_DATA_RE = re.compile(
    r"in reply to (end of )?data command|after (end of )?data\b|^>>> DATA\s*\n<<< [45]\d\d",
    re.I | re.M,
)
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


# Explicit "no such account" statements stay user-unknown whatever the SMTP stage.
_EXPLICIT_NO_ACCOUNT_RE = re.compile(
    r"(doesn't|does not) have an? .{0,40}account|account .{0,40}(does not|doesn't) exist", re.I
)


def rejected_after_data(text: str) -> bool:
    """True when the failing reply answered DATA, not RCPT TO.

    A "user unknown" at that stage is a content or domain filter in disguise (au/KDDI does
    this): the mailbox exists, so it must not be cleaned. Sendmail transcripts that show
    pipelined RCPT failures ("Need RCPT") after DATA are not counted.
    """
    text = text or ""
    if _EXPLICIT_NO_ACCOUNT_RE.search(text):
        return False
    flat = " ".join(text.split())
    m = _AFTER_DATA_RE.search(text) or _AFTER_DATA_RE.search(flat)
    return m is not None and not _PIPELINED_RCPT_RE.search(m.string[m.end() :])
