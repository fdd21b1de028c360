"""The send engine: every contact told once per channel, at the campaign's rates, on record.

How "nobody skipped, nobody told twice" holds:

* Planning inserts one message row per (campaign, contact, channel, notice, sequence); the
  unique constraint makes a second plan, a second worker or a re-run create nothing new.
* Workers claim batches of rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
  serializes writers), renewed while the worker lives. A dead worker's lease runs out and its
  rows are taken over.
* ``sending`` is committed (with the attempt count) before the provider is called, and the
  provider's answer is committed before the worker moves on. A row found ``sending`` with an
  expired lease is "in doubt": an email is sent again with the same Message-ID (the only
  repeats possible, at most ``concurrency`` of them); an SMS is first looked up at the
  provider by recipient and time, and adopted if it was sent.
* Transient failures wait in ``sending`` with ``next_attempt_at`` set (exponential backoff,
  at least Retry-After); permanent ones end ``failed`` at once with the provider's code.
* A provider outage (no connection, timeouts, 5xx in a row) pauses the channel instead: what
  was begun goes back without spending an attempt, and one probe at a time (backing off to
  60 s) finds out when the provider is back (:mod:`notify.outage`); after ``--max-outage``
  the run ends with exit status 75 and everything unsent still pending.

Each channel has its own pipeline: a producer that claims rows and ``concurrency`` consumers
that render, wait for a throttle slot and push to the channel's messenger.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Engine,
)
from sqlalchemy.orm import Session

from notify import mime, templates
from notify.config import Settings
from notify.db import session_scope
from notify.errors import NotifyError
from notify.models import (
    Status,
    utcnow,
)
from notify.outage import (
    ChannelOutage,
    OutageState,
    OutageTooLong,
)
from notify.send.options import SendOptions, SendSummary
from notify.send.plan import Job, load_job, plan
from notify.send.store import (
    Begin,
    Item,
    Sent,
    attempt_proofs,
    begin_attempts,
    claim,
    in_flight_counts,
    in_flight_messages,
    known_provider_ids,
    outstanding,
    record_content,
    record_failed,
    record_put_back,
    record_retry,
    record_sent,
    refund_attempts,
    release,
    renew,
    skipped_counts,
    status_totals,
    unlease,
)
from notify.throttle import Throttle
from notify.transports import (
    HeldBack,
    Messenger,
    Outgoing,
    ProviderDown,
    Result,
    TransportConfigError,
    make_messenger,
)

RETRY_CAP_SECONDS = 300.0


# The furthest ahead of its rate slot a message may start (see Runner._consumers); relays
# wait minutes between commands, so this keeps well inside that.
SLOT_AHEAD = 10.0


# Messages begun in one group commit ahead of their hand-over (see Runner._ahead).
PREPARE_GROUP = 8


PREPARE_SECONDS = 0.25


# An in-doubt SMS is adopted only from a provider message created at or after one of its
# attempts began, less this much for the difference between our clock and the provider's.
ADOPT_SKEW = timedelta(seconds=5)


# How often the engine tells its observer that time passed (progress lines, outage lines).
TICK_SECONDS = 1.0
# How often a message waiting for its rate slot checks whether it is held back meanwhile.
HELD_BACK_POLL = 0.2


class Runner:
    """One worker's run over one campaign: a pipeline per channel."""

    def __init__(self, engine: Engine, settings: Settings, job: Job, options: SendOptions) -> None:
        self.engine = engine
        self.settings = settings
        self.job = job
        self.options = options
        self.worker = options.worker_id or (
            f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.summary = SendSummary(campaign=job.campaign.name)
        self.stop = asyncio.Event()
        self.claimed = 0
        self.fatal: NotifyError | None = None
        self.failure: BaseException | None = None  # a bug or a lost database: stop, re-raise
        self.finished: set[str] = set()
        self.outages: dict[str, ChannelOutage] = {}
        self.observer = options.observer
        self.sms_from = settings.sms_from or job.config.sms_from or None
        if "sms" in job.channels and not self.sms_from:
            raise NotifyError("no SMS sender: set sms_from in the campaign or NOTIFY_SMS_FROM")

    def _batch_size(self, channel: str) -> int:
        if self.options.batch_size:
            return self.options.batch_size
        size = max(50, self.job.concurrency * 4)
        rate = self.job.rates.get(channel)
        if rate:  # about 15 s of work at that rate: leases stay short to take over
            size = min(size, max(self.job.concurrency * 2, int(rate * 15)))
        return min(size, 500)

    def _remaining(self) -> int | None:
        if self.options.limit is None:
            return None
        return max(0, self.options.limit - self.claimed)

    async def run(self) -> SendSummary:
        """Send until nothing is pending or leased for the chosen channels (or stopped)."""
        started = time.monotonic()
        # Each resource is released as soon as it exists, in the reverse order of its start
        # (the ticker and progress first; the leases and signal handlers last).
        async with AsyncExitStack() as stack:
            self._install_signals()
            stack.callback(self._restore_signals)
            stack.push_async_callback(asyncio.to_thread, release, self.engine, self.worker)
            self.recorder = _recorder(self.engine)
            stack.push_async_callback(asyncio.to_thread, self.recorder.close)
            messengers: dict[str, Messenger] = {}
            for ch in self.job.channels:
                messengers[ch] = make_messenger(
                    ch,
                    self.settings,
                    self.job.config,
                    self.job.concurrency,
                    timeout=self.options.provider_timeout,
                )
                stack.push_async_callback(messengers[ch].close)
            stack.callback(asyncio.create_task(self._heartbeat()).cancel)
            low, high = self.options.outage_backoff
            self.outages = {
                ch: ChannelOutage(
                    ch,
                    messengers[ch].provider,
                    backoff_min=low,
                    backoff_max=high,
                    max_outage=self.options.max_outage,
                    on_start=self._outage_started,
                    on_end=self._outage_ended,
                )
                for ch in self.job.channels
            }
            if self.observer is not None:
                stack.callback(self.observer.end)
                totals = await asyncio.to_thread(_totals_to_send, self)
                self.observer.begin(
                    totals, {ch: self.job.rates.get(ch) or None for ch in self.job.channels}
                )
            stack.callback(asyncio.create_task(self._tick()).cancel)
            outcomes = await asyncio.gather(
                *(self._pipeline(ch, messengers[ch]) for ch in self.job.channels),
                return_exceptions=True,
            )  # the teardown runs only once all have ended
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    self._fail(outcome)
        if self.failure is not None:
            raise self.failure
        if self.fatal is not None:
            raise self.fatal
        self.summary.elapsed = time.monotonic() - started
        self.summary.interrupted = self.stop.is_set() and not self._limit_reached()
        with session_scope(self.engine) as session:
            self.summary.totals = status_totals(session, self.job.campaign.id)
        return self.summary

    def _limit_reached(self) -> bool:
        remaining = self._remaining()
        return remaining is not None and remaining <= 0

    async def _pipeline(self, channel: str, messenger) -> None:
        """Claim, prepare and hand over one channel's messages, each stage its own task(s).

        The preparer commits `sending` (and reset links) for a few messages at a time and
        renders them, while the consumers hand earlier ones to the provider: the commit of
        one message's attempt is not on the critical path of another's hand-over.
        """
        claimed: asyncio.Queue[Item | None] = asyncio.Queue()
        n_consumers = self._consumers(channel)
        ahead = self._ahead(channel, n_consumers)
        # Prepared messages are committed `sending`, in flight: keep only a few waiting.
        ready: asyncio.Queue[_Ready | None] = asyncio.Queue(maxsize=ahead)
        throttle = Throttle(self.engine, self.job.campaign.id, channel, self.job.rates.get(channel))
        preparer = asyncio.create_task(self._prepare(channel, claimed, ready, n_consumers, ahead))
        outage = self.outages[channel]
        consumers = [
            asyncio.create_task(self._consume(claimed, ready, messenger, throttle, outage))
            for _ in range(n_consumers)
        ]
        try:
            await self._produce(channel, claimed)
        except Exception as exc:  # e.g. a claim the database refused: stop every channel
            self._fail(exc)
        finally:
            claimed.put_nowait(None)
            await preparer
            await asyncio.gather(*consumers)
            await messenger.flush()
            self.finished.add(channel)

    def _ahead(self, channel: str, n_consumers: int) -> int:
        """How many messages may be begun before a consumer is free to hand them over.

        Enough to hide a group commit at full speed; at a set rate, no more than a quarter
        second's worth, so a stop (which still hands them over) ends promptly.
        """
        ahead = min(PREPARE_GROUP, n_consumers)
        rate = self.job.rates.get(channel)
        if rate:
            ahead = min(ahead, math.ceil(rate * PREPARE_SECONDS))
        return max(1, ahead)

    def _consumers(self, channel: str) -> int:
        """``--concurrency``, but no more than the rate lets start within SLOT_AHEAD seconds.

        A consumer waits for its rate slot in the middle of its SMTP transaction (after RCPT);
        at a slow rate, many consumers would keep the relay waiting long enough to time out.
        """
        rate = self.job.rates.get(channel)
        if not rate:
            return self.job.concurrency
        return max(1, min(self.job.concurrency, math.ceil(rate * SLOT_AHEAD)))

    def _fallback_may_come(self, channel: str) -> bool:
        """True while the email pipeline runs and its failures may still queue SMS."""
        config = self.job.config
        return (
            channel == "sms"
            and config.fallback == "sms"
            and "sms" not in config.channels
            and "email" in self.job.channels
            and "email" not in self.finished
        )

    async def _produce(self, channel: str, queue: asyncio.Queue) -> None:
        size = self._batch_size(channel)
        while not self.stop.is_set():
            remaining = self._remaining()
            if remaining == 0:
                return
            # Keep one batch queued ahead so consumers never starve between claims.
            if queue.qsize() >= size:
                await asyncio.sleep(0.01)
                continue
            want = size if remaining is None else min(size, remaining)
            batch = await asyncio.to_thread(
                claim,
                self.engine,
                self.job.campaign.id,
                channel,
                self.worker,
                want,
                self.options.lease_seconds,
                self.options.notice,
            )
            if batch:
                self.claimed += len(batch)
                for item in batch:
                    queue.put_nowait(item)
                continue
            await queue.join()
            wait = await asyncio.to_thread(
                outstanding, self.engine, self.job.campaign.id, channel, self.options.notice
            )
            if wait is None:
                if not self._fallback_may_come(channel):
                    return
                wait = 0.2
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _prepare(
        self,
        channel: str,
        claimed: asyncio.Queue,
        ready: asyncio.Queue,
        n_consumers: int,
        ahead: int,
    ) -> None:
        """Begin and render claimed messages in small groups; queue them for the consumers.

        Ends (telling every consumer to end) at the producer's end-of-work marker. Once the
        run is stopping, claimed messages are left unstarted: their leases are released.
        """
        cancelled = False
        outage = self.outages[channel]
        items: list[Item] = []  # taken from the queue, not yet begun
        end = False
        try:
            while True:
                probe = None
                if not items and not end:
                    taken = await _take_some(claimed, ahead)
                    end = taken[-1] is None
                    items = [i for i in taken if i is not None]
                if items and not self.stop.is_set():
                    # While the provider is down, nothing is begun but one probe at a time.
                    try:
                        probe = await outage.admit(self.stop)
                    except OutageTooLong as exc:
                        self._give_up(exc)
                        probe = None
                if self.stop.is_set():
                    for _ in items:
                        claimed.task_done()
                    items = []
                elif items:
                    group = items[:1] if probe is not None else items
                    items = items[len(group) :]
                    try:
                        await self._prepare_group(group, claimed, ready, probe)
                    except Exception as exc:
                        self._fail(exc)
                        for _ in items:
                            claimed.task_done()
                        await _drain(claimed, end)  # the producer waits on every item
                        return
                if end and not items:
                    claimed.task_done()
                    return
        except asyncio.CancelledError:
            cancelled = True  # torn down: the consumers are being cancelled too
            raise
        finally:
            if not cancelled:
                for _ in range(n_consumers):
                    await ready.put(None)

    def _fail(self, exc: BaseException) -> None:
        """Stop the run on an unexpected error; :meth:`run` raises it once all is closed."""
        if self.failure is None:
            self.failure = exc
        self.stop.set()

    def _give_up(self, exc: NotifyError) -> None:
        """End the run with ``exc`` (an outage that lasted too long): begun messages go back
        unspent, unstarted ones are released, and :meth:`run` raises it at the end."""
        self.fatal = self.fatal or exc
        self.stop.set()

    def _outage_started(self, state: OutageState) -> None:
        if self.observer is not None:
            self.observer.outage_started(state)

    def _outage_ended(self, state: OutageState, seconds: float) -> None:
        if self.observer is not None:
            self.observer.outage_ended(state, seconds)

    async def _tick(self) -> None:
        """Tell the observer time passed, and end the run when an outage lasted too long
        even while no message waits to probe (e.g. all were put back and are not yet due)."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._check_outages()
            if self.observer is not None:
                self.observer.tick()

    def _check_outages(self) -> None:
        for outage in self.outages.values():
            expired = outage.too_long()
            if expired is not None:
                self._give_up(expired)

    async def _prepare_group(
        self,
        items: list[Item],
        claimed: asyncio.Queue,
        ready: asyncio.Queue,
        probe: int | None = None,
    ) -> None:
        """Begin and render ``items``; each ends queued for a consumer (which marks it done)
        or marked done here, even when this raises (the producer waits for every one).

        ``probe``: the outage ticket of the one item sent to find out whether the provider
        is back (it is settled here when the item never reaches a consumer)."""
        left = list(items)
        queued = False
        try:
            # An SMS in doubt is first looked up at the provider; its consumer does it all.
            for item in [i for i in left if _in_doubt_sms(i)]:
                await ready.put(_Ready(item, probe=probe))
                queued = True
                left.remove(item)
            begun = await self._begin(list(left))
            for item, prepared in zip(list(left), begun, strict=True):
                left.remove(item)
                if prepared is None:  # lost to another worker, final, or template failed
                    claimed.task_done()
                else:
                    prepared.probe = probe
                    await ready.put(prepared)  # then its consumer marks it done
                    queued = True
        finally:
            for _ in left:
                claimed.task_done()
            if not queued and probe is not None:
                self.outages[items[0].channel].settle(probe)

    async def _begin(self, items: list[Item]) -> list[_Ready | None]:
        """Render ``items`` and commit their attempts (`sending`, with each one's content
        hash and reset link) in one group; what to hand over, or None per item.

        Rendering comes first so that the commit carries the hash of exactly what will be
        handed over. None: the template failed (recorded `failed`), or the row was lost to
        another worker or is final (nothing to do).
        """
        now = utcnow()
        drafts: list[tuple[Item, Begin, Outgoing, dict]] = []
        results: dict[int, _Ready | None] = {}
        for item in items:
            draft = await self._draft(item, now)
            if draft is None:
                results[item.id] = None
            else:
                drafts.append(draft)
        begun = await self.recorder.batched_all(begin_attempts, [d[1] for d in drafts])
        for (item, begin, outgoing, content), (ok, token, _at) in zip(drafts, begun, strict=True):
            if not ok:
                results[item.id] = None
            elif begin.want_token and token != begin.token:
                # The reset was completed since the claim: the notice goes without a link.
                results[item.id] = await self._without_link(item)
            else:
                results[item.id] = _Ready(item, outgoing, content)
        return [results[item.id] for item in items]

    async def _draft(self, item: Item, now: datetime) -> tuple[Item, Begin, Outgoing, dict] | None:
        """One message rendered for the attempt beginning ``now`` (with a fresh reset link
        when it carries one); None when the template failed (then recorded `failed`)."""
        job = self.job
        want = templates.needs_reset(item.view) and bool(job.config.reset_url)
        token = None
        if want:
            from notify.resets import tokens as reset_tokens

            token = reset_tokens.new_token()
        first = item.first_attempt_at
        if item.first_attempt_at is None:
            item.first_attempt_at = now  # the Date of the email: its first attempt
        try:
            outgoing, content = self._render(item, token)
        except NotifyError as exc:
            item.first_attempt_at = first
            await self.recorder.call(record_failed, job, item, "template", str(exc), {})
            self._done(item, "failed")
            return None
        begin = Begin(
            job,
            item,
            self.worker,
            self.options.lease_seconds,
            want,
            token,
            content["content_sha256"],
            now,
        )
        return item, begin, outgoing, content

    async def _without_link(self, item: Item) -> _Ready | None:
        """Render a begun message again without its reset link, and record the hash of that
        content for its attempt (before it is handed over)."""
        try:
            outgoing, content = self._render(item, None)
        except NotifyError as exc:
            await self.recorder.call(record_failed, self.job, item, "template", str(exc), {})
            self._done(item, "failed")
            return None
        await self.recorder.call(record_content, self.job, item, content["content_sha256"])
        return _Ready(item, outgoing, content)

    async def _consume(
        self,
        claimed: asyncio.Queue,
        ready: asyncio.Queue,
        messenger,
        throttle: Throttle,
        outage: ChannelOutage,
    ) -> None:
        while True:
            prepared = await ready.get()
            if prepared is None:
                return
            try:
                if prepared.outgoing is None:
                    await self._deliver(prepared, messenger, throttle, outage)
                else:
                    await self._hand_over(prepared, messenger, throttle, outage)
            except Exception as exc:
                self._fail(exc)  # this consumer goes on taking (and dropping) its share
            finally:
                outage.settle(prepared.probe)  # a probe that got no answer: probe again
                claimed.task_done()

    async def _deliver(
        self, ready: _Ready, messenger, throttle: Throttle, outage: ChannelOutage
    ) -> None:
        """Reconcile, begin, render and hand over one message (an SMS in doubt)."""
        item = ready.item
        if self.stop.is_set() or outage.hold_back(ready.probe):
            await asyncio.to_thread(unlease, self.engine, item.id, self.worker)
            return  # not started: due again at once (at the end of the outage)
        if _in_doubt_sms(item):
            try:
                reconciled = await self._reconciled(item, messenger)
            except ProviderDown as exc:
                # The lookup could not reach the provider: the outage rule, not a stop.
                outage.report(exc.kind, str(exc), item.id, ready.probe)
                await asyncio.to_thread(unlease, self.engine, item.id, self.worker)
                return
            outage.report(None, None)  # the provider answered
            if reconciled:
                return
        prepared = (await self._begin([item]))[0]
        if prepared is not None:
            prepared.probe = ready.probe
            await self._hand_over(prepared, messenger, throttle, outage)

    async def _hand_over(
        self, prepared: _Ready, messenger, throttle: Throttle, outage: ChannelOutage
    ) -> None:
        """Push one begun message through its messenger, then record the answer.

        A begun message is committed `sending`: it is handed over even while the run is
        stopping (it is in flight), unless the transport's setup is known to be wrong or
        its provider is down (then it goes back without spending its attempt).
        """
        job, item, content = self.job, prepared.item, prepared.content
        outgoing = prepared.outgoing
        if self.failure is not None:
            return  # its answer could not be recorded: it stays in doubt (resent later)
        if self._held_back(outage, prepared.probe):
            await self._put_back_unsent(prepared, outage)
            return
        if outgoing is None:  # never rendered: nothing to hand over
            return
        handed_over = acquired = False

        async def ready() -> None:  # the messenger's last step before hand-over
            nonlocal handed_over, acquired
            await self._slot_unless_held_back(throttle, outage, prepared.probe)
            acquired = True
            # The slot may come long after the check above (a slow rate, many consumers
            # waiting): a channel declared down meanwhile, or a run given up, sends nothing
            # new (the probe aside), so an outage never keeps pushing into a silent provider.
            if self._held_back(outage, prepared.probe):
                raise HeldBack
            handed_over = True

        outgoing.ready = ready
        # A push whose answer was lost looks the message up only while that can still help.
        outgoing.may_look_up = lambda: not self._held_back(outage, prepared.probe)
        try:
            result = await messenger.push(outgoing)
        except HeldBack:
            await self._put_back_unsent(prepared, outage)
            return
        except TransportConfigError as exc:
            # Wrong credentials or relay setup: every message would fail the same way. Put
            # this one back (due now) and stop the run with the reason.
            back = Result(outcome="retry", error_code="config", error_message=str(exc))
            await self.recorder.call(
                record_put_back, job, item, back, content, handed_over, False, "retry"
            )
            self.fatal = self.fatal or exc
            self.stop.set()
            return
        finally:
            if acquired:
                throttle.release()
        if result.candidates:
            result = await self._adoptable(result)
        if outage.report(result.outage, result.error_message, item.id, prepared.probe):
            # The provider is down: this message goes back unspent (and so do the earlier
            # 5xx answers of the streak that turned out to be an outage).
            await self.recorder.call(
                record_put_back, job, item, result, content, handed_over, result.in_doubt, "outage"
            )
            refund = outage.refund()
            if refund:
                await self.recorder.call(refund_attempts, job, refund)
            return
        if result.outcome == "retry" and result.error_code == "429":
            # Too fast for the provider: slow the whole channel, not just this message.
            throttle.pause(result.retry_after or 1.0)
        await self._record(item, result, content)

    async def _slot_unless_held_back(
        self, throttle: Throttle, outage: ChannelOutage, probe: int | None
    ) -> None:
        """Wait for a rate slot; raise HeldBack instead when the message is held back while
        it waits (a slow rate would otherwise make every consumer in line wait its slot
        before the run could end). The acquisition is not cancelled (the throttle's shared
        reservation must not be): a slot it gets later is released unused."""
        slot = asyncio.ensure_future(throttle.acquire())
        while not slot.done():
            await asyncio.wait({slot}, timeout=HELD_BACK_POLL)
            if not slot.done() and self._held_back(outage, probe):
                slot.add_done_callback(_release_unused(throttle))
                raise HeldBack
        slot.result()

    def _held_back(self, outage: ChannelOutage, probe: int | None) -> bool:
        """True when a begun message must not be handed over now: the run is giving up,
        or its channel is down and it is not the probe."""
        return self.fatal is not None or outage.hold_back(probe)

    async def _put_back_unsent(self, prepared: _Ready, outage: ChannelOutage) -> None:
        """Record a begun message as never handed over: back to its earlier state without
        spending its attempt (an outage, a run given up, or a transport set up wrong)."""
        kind = "outage" if outage.active or isinstance(self.fatal, OutageTooLong) else "retry"
        state = outage.state
        error = (
            self.fatal if self.fatal is not None else (state.error if state is not None else None)
        )
        back = Result(
            outcome="retry",
            error_code="config" if kind == "retry" else "outage",
            error_message=str(error),
        )
        await self.recorder.call(
            record_put_back, self.job, prepared.item, back, prepared.content, False, False, kind
        )

    async def _adoptable(self, result: Result) -> Result:
        """A timed-out SMS push found at the provider: adopt the first matching SID no row
        holds; when every match belongs to another row, this one is still in doubt."""
        known = await asyncio.to_thread(known_provider_ids, self.engine, list(result.candidates))
        for sid in result.candidates:
            if sid not in known:
                return Result(
                    "sent",
                    provider_id=sid,
                    provider_status=result.provider_status,
                    error_message=result.error_message,
                )
        return Result(
            "retry",
            error_code="timeout",
            outage="connection",
            in_doubt=True,
            error_message="timed out; the matching SMS at the provider belongs to another message",
        )

    def _render(self, item: Item, token: str | None) -> tuple[Outgoing, dict]:
        job = self.job
        reset_url = None
        if token:
            from notify.resets import tokens as reset_tokens

            reset_url = reset_tokens.reset_url(job.config, token)
        to = item.address
        if to is None:  # planning gives every row an address (rows without one are skipped)
            raise NotifyError(f"message {item.id} has no address")
        rendered: templates.RenderedEmail | templates.RenderedSms
        if item.channel == "email":
            rendered = job.notices.render_email(item.view, notice=item.notice, reset_url=reset_url)
            message_id = mime.message_id_for(job.config, job.campaign.id, item.id)
            # Date = the first attempt, so a re-send after a crash is the same message.
            data = mime.build_email(
                job.config, rendered, to, message_id, when=item.first_attempt_at or utcnow()
            )
            outgoing = Outgoing(
                row_id=item.id,
                channel="email",
                to=to,
                data=data,
                message_id=message_id,
                sender=job.envelope_sender(item.id),
            )
            digest = hashlib.sha256(data).hexdigest()
        else:
            rendered = job.notices.render_sms(item.view, notice=item.notice, reset_url=reset_url)
            outgoing = Outgoing(
                row_id=item.id, channel="sms", to=to, body=rendered.text, sender=self.sms_from
            )
            digest = hashlib.sha256(rendered.text.encode()).hexdigest()
        content = {
            "template": f"{rendered.template}/{item.notice}",
            "template_version": rendered.version,
            "content_sha256": digest,
        }
        return outgoing, content

    async def _record(self, item: Item, result: Result, content: dict) -> None:
        job = self.job
        if result.outcome == "sent":
            provider_id = result.provider_id
            await self.recorder.batched(
                record_sent, Sent(job, item, provider_id, result.provider_status, content)
            )
            self._done(item, "sent")
        elif result.outcome == "retry" and item.attempts + 1 < self._attempt_cap(result):
            delay = self._backoff(item.attempts + 1, result.retry_after)
            await self.recorder.call(record_retry, job, item, result, delay, content)
            self._done(item, "retry", final=False)
        else:
            await self.recorder.call(
                record_failed, job, item, result.error_code, result.error_message, content
            )
            self._done(item, "failed")

    def _attempt_cap(self, result: Result) -> int:
        # Being told to slow down says nothing about the message: allow more of those.
        if result.error_code == "429":
            return self.job.max_attempts * 4
        return self.job.max_attempts

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(RETRY_CAP_SECONDS, self.options.retry_base * (2 ** (attempt - 1)))
        delay *= random.uniform(1.0, 1.2)  # spread retries of a burst apart
        return max(delay, retry_after or 0.0)

    async def _reconciled(self, item: Item, messenger) -> bool:
        """True when the provider already has this in-doubt SMS (then it is adopted).

        Proof before adoption: only a message created at or after one of this row's attempts
        began (less ADOPT_SKEW for clocks), whose body is exactly what that attempt handed
        over (its hash in the attempt's `sending` event), and whose SID no row holds. An
        unrelated text to the same number (a login code, another campaign) is never taken
        for the notice: then the notice is sent.
        """
        proofs = await asyncio.to_thread(attempt_proofs, self.engine, item.id)
        if not proofs:
            return False  # nothing on record to prove a match with
        since = min(at for at, _ in proofs) - ADOPT_SKEW
        found = await messenger.find_sent(item.address, since)
        matching = [
            f
            for f in found
            if f.body is not None and f.created_at is not None and _proves(f, proofs)
        ]
        known = await asyncio.to_thread(
            known_provider_ids, self.engine, [f.provider_id for f in matching]
        )
        fresh = sorted(
            (f for f in matching if f.provider_id not in known), key=lambda f: f.created_at
        )
        if not fresh:
            return False
        match = fresh[0]
        await self.recorder.batched(
            record_sent,
            Sent(
                self.job, item, match.provider_id, match.status, {}, "reconcile", match.created_at
            ),
        )
        self._done(item, "reconciled")
        return True

    def _done(self, item: Item, outcome: str, final: bool = True) -> None:
        self.summary.done[(item.channel, outcome)] += 1
        if self.observer is not None and final:
            self.observer.done(item.channel, outcome)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease_seconds / 3)
            try:
                await asyncio.to_thread(renew, self.engine, self.worker, self.options.lease_seconds)
            except Exception:  # a missed renewal is retried; the lease still has time
                continue

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        self._signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._request_stop)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _restore_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)

    def _request_stop(self) -> None:
        if not self.stop.is_set():
            print("\nStopping: finishing and recording the messages in flight...", file=sys.stderr)
        self.stop.set()


def _release_unused(throttle: Throttle) -> Callable[[asyncio.Future], None]:
    """A callback giving back a slot acquired for a message that was held back meanwhile."""

    def done(slot: asyncio.Future) -> None:
        if not slot.cancelled() and slot.exception() is None:
            throttle.release()

    return done


@dataclass
class _Ready:
    """A claimed message and, once begun and rendered, what to hand over."""

    item: Item
    outgoing: Outgoing | None = None
    content: dict = field(default_factory=dict)
    probe: int | None = None  # the outage probe ticket it carries, if any


def _proves(found, proofs: list[tuple[datetime, str]]) -> bool:
    """True when ``found`` (a provider message) is exactly what one of the attempts handed
    over, created at or after that attempt began (less ADOPT_SKEW)."""
    digest = hashlib.sha256(found.body.encode()).hexdigest()
    created = _aware(found.created_at)
    return any(
        digest == expected and created >= _aware(began) - ADOPT_SKEW for began, expected in proofs
    )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _in_doubt_sms(item: Item) -> bool:
    """An SMS attempted before (a crash, a lost answer, a retry): the provider may already
    have it. Its attempt count may be 0 (given back after an outage), its status says."""
    return (
        item.channel == "sms"
        and item.status == Status.SENDING
        and item.first_attempt_at is not None
    )


async def _take_some(queue: asyncio.Queue, most: int) -> list:
    """The next item (waiting for it), and whatever else is already queued, up to ``most``."""
    items = [await queue.get()]
    while len(items) < most and items[-1] is not None and not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _drain(queue: asyncio.Queue, ended: bool) -> None:
    """Mark every item as done, up to and including the end marker (unless seen already)."""
    if ended:
        queue.task_done()
        return
    while True:
        item = await queue.get()
        queue.task_done()
        if item is None:
            return


def _recorder(engine: Engine):
    from notify.recorder import Recorder

    return Recorder(engine)


def _totals_to_send(runner: Runner) -> dict[str, int]:
    """Messages this run is to attempt, per channel (for the observer's progress)."""
    with Session(runner.engine) as session:
        counts = in_flight_counts(
            session, runner.job.campaign.id, runner.job.channels, runner.options.notice
        )
    totals = {ch: counts.get(ch, 0) for ch in runner.job.channels}
    if runner.options.limit is not None:
        left = runner.options.limit
        for ch in totals:
            totals[ch] = min(totals[ch], left)
    return totals


def _dry_run(engine: Engine, job: Job, options: SendOptions) -> SendSummary:
    """Plan and render everything that would be sent, then roll it all back."""
    started = time.monotonic()
    summary = SendSummary(campaign=job.campaign.name, dry_run=True)
    # A link as long as a real one, so SMS segment counts are what sending will see.
    placeholder = templates.reset_link(job.config, templates.sample_token())
    session = Session(engine)
    try:
        with session.begin():
            if options.notice != "reminder":
                summary.planned = plan(session, job.campaign, job.channels)
                session.flush()
            for message, contact in in_flight_messages(
                session, job.campaign.id, job.channels, options.notice, options.limit
            ):
                view = templates.ContactView.from_model(contact)
                url = placeholder if templates.needs_reset(view) else None
                if message.channel == "email":
                    job.notices.render_email(view, notice=message.notice, reset_url=url)
                else:
                    job.notices.render_sms(view, notice=message.notice, reset_url=url)
                summary.done[(message.channel, "would send")] += 1
            summary.totals = status_totals(session, job.campaign.id)
            summary.skipped = skipped_counts(session, job.campaign.id, job.channels, options)
            session.rollback()
    finally:
        session.close()
    summary.elapsed = time.monotonic() - started
    return summary


async def run_campaign(
    engine: Engine, settings: Settings, name: str, options: SendOptions
) -> SendSummary:
    """Plan the campaign's rows and send everything pending (async entry point)."""
    job = await asyncio.to_thread(load_job, engine, settings, name, options)
    if options.dry_run:
        summary = await asyncio.to_thread(_dry_run, engine, job, options)
        summary.transports = dict(job.transports)
        return summary
    planned: Counter = Counter()
    if options.notice != "reminder":  # reminders are planned by resets.reminders
        with session_scope(engine) as session:
            planned = plan(session, job.campaign, job.channels)
    runner = Runner(engine, settings, job, options)
    summary = await runner.run()
    summary.planned = planned
    summary.transports = dict(job.transports)
    return summary


def send_campaign(
    engine: Engine, settings: Settings, name: str, options: SendOptions | None = None
) -> SendSummary:
    """Plan and send a campaign to completion; safe to run again, and in several processes."""
    # The event loop keeps the rate; hand it the GIL within 1 ms of the recorder thread
    # holding it (Python's default, 5 ms, is a whole slot at 200/s).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, 0.001))
    try:
        return asyncio.run(run_campaign(engine, settings, name, options or SendOptions()))
    finally:
        sys.setswitchinterval(previous)
