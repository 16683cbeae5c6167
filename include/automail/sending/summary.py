"""What a send run, batch or send-by-hand did: counts an operator can read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class SendSummary:
    claimed: int = 0
    sent: int = 0
    retry_scheduled: int = 0  # temporary failure, will be retried (status error + next try)
    failed: int = 0  # error for good: permanent reply or retries used up
    refused: int = 0  # error without SMTP: bad address or unsafe header (reason stored)
    in_doubt: int = 0  # connection lost after DATA: held for a human
    skipped: int = 0  # claim lost (released/reclaimed) before sending
    held_cap: int = 0  # B7: held because the run reached the cap
    deferred_rate: int = 0  # over a domain's rate: left for the next run
    deferred_cap: int = 0  # newsletter/step mails over the cap: left for the next run
    deferred_backoff: int = 0  # their domain answered 4xx: given back unattempted, wait
    leases_released: int = 0  # lapsed leases put back in the queue
    recovered_in_doubt: int = 0  # lapsed leases with an in_flight attempt: held
    notices: int = 0  # notice mails created (cap, pending)
    batches: int = 0
    stopped: bool = False  # mail_server_stopped was on: nothing sent
    not_claimed: dict[int, str] = field(default_factory=dict)  # send_now refusals

    def merge(self, other: SendSummary) -> SendSummary:
        for f in fields(self):
            if f.name == "stopped":
                self.stopped = self.stopped or other.stopped
            elif f.name == "not_claimed":
                self.not_claimed.update(other.not_claimed)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict:
        data = asdict(self)
        data["not_claimed"] = {str(k): v for k, v in self.not_claimed.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SendSummary:
        data = dict(data)
        data["not_claimed"] = {int(k): v for k, v in (data.get("not_claimed") or {}).items()}
        return cls(**data)
