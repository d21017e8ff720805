"""Cron expressions in a time zone: checked once, then asked for ticks. Pure: no I/O, no clock.

A :class:`Cron` pairs an expression with an IANA time zone and answers two questions in POSIX
seconds: the first tick after an instant (:meth:`Cron.next_after`), and the ticks due in a window
(:meth:`Cron.due`). The expressions are evaluated by `croniter <https://github.com/pallets-eco/
croniter>`_ with ``second_at_beginning=True``:

- 5 fields: ``minute hour day-of-month month day-of-week`` (standard cron; a tick at second 0);
- 6 fields: a leading **seconds** field, ``second minute hour day-of-month month day-of-week``
  (as DBOS, Quartz and Spring write it): ``*/10 * * * * *`` is every 10 seconds;
- the nicknames ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``.

Names of months and days (``JAN``, ``mon-fri``), ranges, lists, steps, ``L`` and ``#`` work as in
croniter; a day-of-month and a day-of-week both restricted match either (Vixie cron). A 7th (year)
field and croniter's hashed or random fields (``H``, ``R``) are refused: every process must compute
the same ticks.

Ticks are computed on the wall clock of the time zone. Across daylight saving time changes this
is croniter's behaviour: on the spring-forward night a tick whose local time does not exist (2:30
in Berlin on the last Sunday of March) runs once, at the first instant after the gap (3:00 CEST);
on the fall-back night a tick whose local time happens twice (2:30 in Berlin on the last Sunday
of October) runs twice, once at each instant (00:30 and 01:30 UTC). Ticks are always distinct
instants, increasing in UTC.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterError, croniter

__all__ = ["MAX_CATCH_UP", "Cron", "check_time_zone"]

MAX_CATCH_UP = 1000
"""The most ticks of one schedule started at once after missing them (the latest ones): a
per-second schedule whose processes were all down for a week starts 1,000 workflows, not 604,800.
"""

_NICKNAMES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_HASHED = re.compile(r"[HR](\(.*\))?(/\d+)?", re.IGNORECASE)
_FIELDS_HELP = (
    "write 5 fields (minute hour day-of-month month day-of-week, e.g. '*/5 * * * *') or 6 with"
    " a leading seconds field (second minute hour day-of-month month day-of-week, e.g."
    " '*/10 * * * * *')"
)


def check_time_zone(tz: object) -> ZoneInfo:
    """The zone named ``tz`` (an IANA name such as ``"Europe/Berlin"``); ValueError naming it
    and the fix when there is no such zone."""
    if not isinstance(tz, str) or not tz:
        raise ValueError(
            f"tz must be the name of a time zone, such as 'UTC' or 'Europe/Berlin', not {tz!r}"
        )
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {tz!r}; give an IANA time zone name such as 'UTC',"
            " 'Europe/Berlin' or 'America/New_York' (zoneinfo.available_timezones() lists"
            " them; install the tzdata package where the system has no zone database)"
        ) from None


def _check_expression(expression: object) -> str:
    if not isinstance(expression, str):
        raise ValueError(f"a cron expression is a string such as '*/5 * * * *', not {expression!r}")
    fields = expression.split()
    if len(fields) == 1 and fields[0].lower() in _NICKNAMES:
        return expression
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} field(s); {_FIELDS_HELP}"
        )
    for item in fields:
        if _HASHED.fullmatch(item):
            raise ValueError(
                f"cron expression {expression!r} uses a hashed or random field ({item!r}), whose"
                " ticks would differ between processes; write the minute, hour... explicitly"
            )
    return expression


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked cron ``expression`` in the time zone ``tz``; see the module docstring."""

    expression: str
    tz: str
    zone: ZoneInfo = field(compare=False, repr=False)

    @classmethod
    def parse(cls, expression: object, tz: object = "UTC") -> Cron:
        """Check ``expression`` and ``tz``; ValueError naming the problem and the fix, also when
        the expression never matches (``0 0 30 2 *``)."""
        zone = check_time_zone(tz)
        text = _check_expression(expression)
        assert isinstance(tz, str)
        try:
            croniter(text, second_at_beginning=True)
        except CroniterBadCronError as exc:
            raise ValueError(f"bad cron expression {text!r} ({exc}); {_FIELDS_HELP}") from None
        cron = cls(text, tz, zone)
        if cron.next_after(0.0) is None:
            raise ValueError(
                f"cron expression {text!r} never matches (no tick in 50 years); check the day of"
                " the month against the month"
            )
        return cron

    def _iter(self, start: float) -> croniter:
        return croniter(
            self.expression, datetime.fromtimestamp(start, self.zone), second_at_beginning=True
        )

    def next_after(self, instant: float) -> float | None:
        """The first tick strictly after ``instant`` (POSIX seconds); None if there is none in
        the next 50 years."""
        it = self._iter(instant)
        try:
            for _ in range(4):  # (a tick is always later; guard against a library quirk)
                tick = it.get_next(datetime).timestamp()
                if tick > instant:
                    return tick
        except CroniterError:
            return None
        return None

    def latest_at(self, instant: float) -> float | None:
        """The last tick at or before ``instant``, or None."""
        it = self._iter(math.floor(instant) + 1.0)  # ticks are whole seconds
        try:
            tick = it.get_prev(datetime).timestamp()
        except CroniterError:
            return None
        return tick if tick <= instant else None

    def due(self, after: float, now: float, limit: int = MAX_CATCH_UP) -> tuple[list[float], bool]:
        """The ticks ``t`` with ``after < t <= now``, oldest first: all of them, or only the
        latest ``limit`` (then the second item is True: older ones were left out)."""
        ticks, complete = self._forward(after, now, limit + 1)
        if complete:
            return ticks, False
        # More than ``limit`` are due: walk back ``limit`` ticks from now, then forward again.
        back = self._iter(math.floor(now) + 1.0)
        earliest = now
        try:
            for _ in range(limit):
                earliest = back.get_prev(datetime).timestamp()
        except CroniterError:
            pass
        ticks, _ = self._forward(max(after, earliest - 1.0), now, 2 * limit)
        return ticks[-limit:], True

    def _forward(self, after: float, now: float, cap: int) -> tuple[list[float], bool]:
        """Up to ``cap`` ticks in ``(after, now]``, and whether they are all of them."""
        ticks: list[float] = []
        if now <= after:
            return ticks, True
        it = self._iter(after)
        try:
            while len(ticks) < cap:
                tick = it.get_next(datetime).timestamp()
                if tick > now:
                    return ticks, True
                if tick > after:
                    ticks.append(tick)
        except CroniterError:
            return ticks, True
        return ticks, False

    def local(self, instant: float) -> datetime:
        """``instant`` as an aware datetime on this zone's wall clock, with the zone's UTC
        offset at that instant as a fixed offset: what a workflow's JSON inputs decode to, so a
        recovered run sees exactly the value the first run saw."""
        moment = datetime.fromtimestamp(instant, self.zone)
        return moment.replace(tzinfo=timezone(moment.utcoffset() or timedelta(0)))

    def zoned(self, instant: float) -> datetime:
        """``instant`` as an aware datetime in this zone (a :class:`~zoneinfo.ZoneInfo`)."""
        return datetime.fromtimestamp(instant, self.zone)
