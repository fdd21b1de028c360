"""`notify plan`: what sending a campaign will take, before it starts.

Per channel: the messages still to send, SMS segments (each SMS rendered as it will be),
the time at the campaign's rates and at the common SMS sender limits (a US long code sends 1
segment a second, a toll-free number 3, a short code 100), the estimated cost from the
campaign's ``prices``, and the day sending finishes against each jurisdiction's notice
deadline. A warning says when the campaign's SMS rate times the segments per message is more
than the sender type allows: the carrier would queue or drop the excess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from notify import templates
from notify.campaigns import CampaignConfig, config_of, get_campaign
from notify.models import IN_FLIGHT_STATUSES, Contact, Message

# Segments per second a US sender of each type may send (carrier limits, typical).
SENDER_LIMITS = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0}
SENDER_LABEL = {
    "long_code": "long code",
    "toll_free": "toll-free number",
    "short_code": "short code",
}
_TOLL_FREE = re.compile(r"^\+18(00|33|44|55|66|77|88)\d{7}$")
# Up to this many SMS, every one is rendered; beyond, one per (exposures, residence) group.
RENDER_EACH = 20_000
OPEN = IN_FLIGHT_STATUSES


@dataclass
class ChannelPlan:
    """One channel's share of the plan."""

    channel: str
    messages: int
    rate: float | None  # messages per second (None: as fast as the provider takes them)
    seconds: float  # at the campaign's rate
    cost: float
    segments: int = 0  # SMS only
    seconds_at: dict[str, float] = field(default_factory=dict)  # SMS: at each sender limit
    effective: float = 0.0  # the time it will really take: the campaign's rate, or the
    # campaign's sender type's limit when that is slower (carriers hold the excess back)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "messages": self.messages,
            "rate_per_second": self.rate,
            "seconds": round(self.seconds, 1),
            "cost": round(self.cost, 4),
        }
        if self.channel == "sms":
            data["segments"] = self.segments
            data["seconds_at_sender_limits"] = {k: round(v, 1) for k, v in self.seconds_at.items()}
            data["seconds_at_sender"] = round(max(self.seconds, self.effective), 1)
        return data


@dataclass
class Plan:
    """The whole plan: channels, cost, finish and deadlines, warnings."""

    campaign: str
    start: datetime
    channels: list[ChannelPlan]
    currency: str
    sender_type: str | None
    deadlines: list[dict[str, Any]]
    warnings: list[str]

    @property
    def seconds(self) -> float:
        """Channels send side by side: the slowest decides."""
        return max((max(c.seconds, c.effective) for c in self.channels), default=0.0)

    @property
    def finish(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.channels)

    def as_json(self) -> dict[str, Any]:
        """The plan as one JSON object (``notify plan --json``)."""
        return {
            "campaign": self.campaign,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "channels": {c.channel: c.as_json() for c in self.channels},
            "sender_type": self.sender_type,
            "cost": round(self.cost, 4),
            "currency": self.currency,
            "seconds": round(self.seconds, 1),
            "finish": self.finish.isoformat().replace("+00:00", "Z"),
            "deadlines": self.deadlines,
            "warnings": self.warnings,
        }


def sender_type(sms_from: str) -> str | None:
    """``toll_free``, ``long_code`` (an E.164 number), or None (a Messaging Service: its
    senders are not known here)."""
    if not sms_from:
        return None
    if _TOLL_FREE.match(sms_from):
        return "toll_free"
    if sms_from.startswith("+"):
        return "long_code"
    return None


def _to_send(channel: str, campaign_id: int) -> Any:
    """Contacts a send will message on ``channel``: an open first notice, or none planned
    yet and an address."""
    col = Contact.email if channel == "email" else Contact.phone
    planned = exists().where(
        and_(
            Message.contact_id == Contact.id,
            Message.channel == channel,
            Message.notice == "notice",
            Message.sequence == 0,
        )
    )
    open_row = exists().where(
        and_(Message.contact_id == Contact.id, Message.channel == channel, Message.status.in_(OPEN))
    )
    return and_(
        Contact.campaign_id == campaign_id,
        or_(open_row, and_(~planned, col.is_not(None), col != "")),
    )


def _sms_segments(
    session: Session,
    notices: templates.Notices,
    config: CampaignConfig,
    campaign_id: int,
    count: int,
) -> tuple[int, list[str]]:
    """Segments of the SMS still to send, rendered as sending will (a reset link of the real
    length); exact up to RENDER_EACH messages, else one render per group."""
    link = templates.reset_link(config, templates.sample_token())
    problems: list[str] = []
    where = _to_send("sms", campaign_id)
    total = 0
    if count <= RENDER_EACH:
        rows = session.execute(select(Contact).where(where).order_by(Contact.id)).scalars()
        groups = ((c, 1) for c in rows)
    else:
        first = (
            select(func.min(Contact.id).label("id"), func.count().label("n"))
            .where(where)
            .group_by(Contact.exposures, Contact.country, Contact.state)
            .subquery()
        )
        groups = (
            (c, n)
            for c, n in session.execute(
                select(Contact, first.c.n).join(first, first.c.id == Contact.id)
            )
        )
    for contact, n in groups:
        view = templates.ContactView.from_model(contact)
        try:
            sms = notices.render_sms(view, reset_url=link if templates.needs_reset(view) else None)
        except templates.TemplateError as exc:
            problems.append(str(exc))
            continue
        total += sms.segments * n
    return total, list(dict.fromkeys(problems))


def _duration(messages: int, rate: float | None) -> float:
    return messages / rate if rate else 0.0


def make_plan(session: Session, name: str, start: datetime) -> Plan:
    """The plan of campaign ``name`` if sending started at ``start`` (see the module)."""
    from notify.rules.check import check_campaign

    campaign = get_campaign(session, name)
    config = config_of(campaign)
    prices = config.prices
    channels: list[ChannelPlan] = []
    warnings: list[str] = []
    used = list(config.channels)
    for channel in used:
        count = (
            session.scalar(
                select(func.count()).select_from(Contact).where(_to_send(channel, campaign.id))
            )
            or 0
        )
        if channel == "email":
            rate = config.throttle.email_per_second
            channels.append(
                ChannelPlan("email", count, rate, _duration(count, rate), count * prices.email)
            )
            continue
        rate = config.throttle.sms_per_second
        segments, problems = _sms_segments(
            session, templates.notices_for(session, campaign), config, campaign.id, count
        )
        warnings += problems
        channels.append(
            ChannelPlan(
                "sms",
                count,
                rate,
                _duration(count, rate),
                segments * prices.sms_segment,
                segments=segments,
                seconds_at={k: segments / v for k, v in SENDER_LIMITS.items()},
            )
        )
    kind = sender_type(config.sms_from)
    sms = next((c for c in channels if c.channel == "sms"), None)
    if sms and kind:
        sms.effective = sms.seconds_at[kind]
    if sms and sms.messages and sms.rate:
        per_message = sms.segments / sms.messages
        demand = sms.rate * per_message
        for key, limit in SENDER_LIMITS.items():
            if demand > limit and (kind is None or kind == key):
                what = (
                    f"this campaign's sender (a {SENDER_LABEL[key]})"
                    if kind == key
                    else f"a {SENDER_LABEL[key]}"
                )
                warnings.append(
                    f"SMS at {sms.rate:g}/s x {per_message:.2f} segments = {demand:.2f} "
                    f"segments/s is more than {what} allows ({limit:g}/s): "
                    f"lower sms_per_second to {math.floor(limit / per_message * 100) / 100:g} "
                    f"or use a faster sender type"
                )
    if "sms" not in used and config.fallback == "sms":
        warnings.append("fallback SMS are not counted: they depend on which emails fail")
    if config.credit_monitoring:
        from notify.codes import pool_state

        pool = pool_state(session, campaign)
        if pool.total == 0 and pool.waiting:
            warnings.append(
                f"{pool.waiting:,} contact(s) with identity data exposed will be "
                "offered monitoring through the enroll_url without a personal code "
                "(import codes with notify codes import if the provider issues them)"
            )
        elif pool.free < pool.waiting:
            warnings.append(
                f"the monitoring-code pool has {pool.free:,} free code(s) for "
                f"{pool.waiting:,} contact(s): send will refuse to start"
            )
    if not prices.email and not prices.sms_segment:
        warnings.append(
            "no prices in the campaign file: the cost is 0 (set prices = { email = "
            "..., sms_segment = ... })"
        )
    plan = Plan(
        campaign=name,
        start=start,
        channels=channels,
        currency=prices.currency,
        sender_type=kind,
        deadlines=[],
        warnings=warnings,
    )
    finish_day = plan.finish.date()
    report = check_campaign(session, name, start.date(), verify_templates=False)
    for j in report.jurisdictions:
        if j.notice_deadline is None:
            continue
        spare = (j.notice_deadline - finish_day).days
        plan.deadlines.append(
            {
                "code": j.code,
                "notice_deadline": j.notice_deadline.isoformat(),
                "met": spare >= 0,
                "days_to_spare": spare,
            }
        )
        if spare < 0:
            warnings.append(
                f"{j.code}: sending finishes {finish_day.isoformat()}, "
                f"{-spare} day(s) after the notice deadline "
                f"{j.notice_deadline.isoformat()}"
            )
    return plan


def human_seconds(seconds: float) -> str:
    """``3 h 25 min``, ``12 min 5 s``, ``40 s``."""
    seconds = int(math.ceil(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0 s"


def format_plan(plan: Plan) -> list[str]:
    """The plan for people, one fact a line."""
    lines = [f"Plan for {plan.campaign}, starting {plan.start:%Y-%m-%d %H:%M} UTC:"]
    for c in plan.channels:
        rate = f"{c.rate:g}/s" if c.rate else "no rate limit"
        if c.channel == "email":
            lines.append(
                f"  email: {c.messages:,} message(s), {human_seconds(c.seconds)} at "
                f"{rate}, {c.cost:,.2f} {plan.currency}"
            )
        else:
            at = ", ".join(f"{SENDER_LABEL[k]} {human_seconds(v)}" for k, v in c.seconds_at.items())
            lines.append(
                f"  sms: {c.messages:,} message(s), {c.segments:,} segment(s), "
                f"{human_seconds(c.seconds)} at {rate}, {c.cost:,.2f} {plan.currency}"
            )
            lines.append(f"       at sender limits: {at}")
            if c.effective > c.seconds:
                lines.append(
                    f"       the campaign's sender holds it to {human_seconds(c.effective)}"
                )
    lines.append(
        f"  total: {plan.cost:,.2f} {plan.currency}; finishes "
        f"{plan.finish:%Y-%m-%d %H:%M} UTC ({human_seconds(plan.seconds)})"
    )
    for d in plan.deadlines:
        verdict = (
            f"{d['days_to_spare']} day(s) to spare"
            if d["met"]
            else f"{-d['days_to_spare']} day(s) LATE"
        )
        lines.append(f"  {d['code']}: notice deadline {d['notice_deadline']}: {verdict}")
    for warning in plan.warnings:
        lines.append(f"Warning: {warning}")
    return lines


__all__ = ["Plan", "ChannelPlan", "make_plan", "format_plan", "SENDER_LIMITS"]
