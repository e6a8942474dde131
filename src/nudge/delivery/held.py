"""What a claimed batch sends: expired jobs are not sent, and the held pushes of one device (quiet
hours or a digest window that ended) go out as one summary push.

A notification held for quiet hours or a digest waits in the queue as a delivery due when its
window ends (``next_attempt_at``), so the worker claims it like any other. Claimed together, the
held device deliveries of one device become one push: the newest notification carries a summary
(see :func:`summary`); the others are recorded ``merged``, naming the delivery that carried them,
once it was delivered (until then they share its fate: retried, failed or removed with it). The
inbox is never held and never merged: it gets every notification as it is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from nudge.delivery.providers.base import Outcome, SendResult
from nudge.delivery.queue import Job

HELD = frozenset({"quiet", "digest"})  # notifications.hold values whose pushes were held back
_RANK = {"low": 0, "normal": 1, "high": 2}


@dataclass(frozen=True)
class Send:
    """One provider call: ``job`` (for a summary, the newest held job, carrying the summary
    message) and the jobs whose content it carries."""

    job: Job
    merged: tuple[Job, ...] = ()

    def results(self, result: SendResult) -> list[tuple[Job, SendResult]]:
        """The carrier's result, and for each merged job ``merged`` (naming the carrier's
        delivery) if the summary was delivered, else the carrier's own result."""
        if not self.merged:  # the plain case: nothing carried, no reason to write
            return [(self.job, result)]
        if result.outcome is Outcome.DELIVERED:
            carried = SendResult(
                Outcome.MERGED, f"sent inside the summary push of delivery {self.job.delivery_id}"
            )
        else:
            carried = result
        return [(self.job, result), *((job, carried) for job in self.merged)]


def expired(job: Job, now: float) -> SendResult | None:
    """``expired`` (saying when) if the sender's ttl ran out before the job could be sent."""
    expires_at = job.message.expires_at
    if expires_at is None or expires_at > now:
        return None
    when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds")
    return SendResult(Outcome.EXPIRED, f"expired at {when} (its ttl ran out) before it was sent")


def plan(jobs: list[Job], now: float) -> tuple[list[tuple[Job, SendResult]], list[Send]]:
    """The results known without sending (expired jobs), and the provider calls to make."""
    done: list[tuple[Job, SendResult]] = []
    sends: list[Send] = []
    held: dict[str, list[Job]] = {}
    for job in jobs:
        result = expired(job, now)
        if result is not None:
            done.append((job, result))
        elif job.hold in HELD and job.provider != "inbox" and job.target and job.target.device_id:
            held.setdefault(job.target.device_id, []).append(job)
        else:
            sends.append(Send(job))
    sends += [summary(group) for group in held.values()]
    return done, sends


def summary(jobs: list[Job]) -> Send:
    """One push for the held jobs of one device. From one app: the newest notification with
    the count in its title ("Mentor says (3)"); from several: "3 new notifications" with the
    newest as the body ("Mentor says: …"). Its data is the newest's plus ``summary_of`` (how
    many); its priority the highest of them; it lives as long as the longest-lived."""
    if len(jobs) == 1:
        return Send(jobs[0])
    ordered = sorted(jobs, key=lambda j: (j.message.created_at, j.message.notification_id))
    *older, newest = ordered
    m = newest.message
    n = len(ordered)
    if len({j.message.app_id for j in ordered}) == 1:
        title, body = f"{m.title} ({n})", m.body
    else:
        title, body = f"{n} new notifications", f"{m.title}: {m.body}"
    lifetimes = [j.message.expires_at for j in ordered]
    message = replace(
        m,
        title=title,
        body=body,
        data={**m.data, "summary_of": n},
        priority=max((j.message.priority for j in ordered), key=lambda p: _RANK.get(p, 1)),
        expires_at=None if None in lifetimes else max(t for t in lifetimes if t is not None),
    )
    return Send(replace(newest, message=message), tuple(older))
