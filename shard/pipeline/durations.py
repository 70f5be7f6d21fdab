"""Parsing the times users type: durations (``10m``, ``2h30m``, ``1 day``) and moments (``14:30``).

Pure functions of the text and a ``now``, so they are tested without a clock. Every failure raises
:class:`ValueError` whose message tells the user what to type instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ("parse_duration", "parse_when", "format_duration", "MAX_AHEAD")

#: The furthest ahead anything may be scheduled.
MAX_AHEAD = timedelta(days=366)

_UNITS: dict[str, int] = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"(\d{1,7})\s*([a-z]+)")
_HELP = 'Give a duration like "10m", "2h30m" or "1d", or a time like "14:30" or "2030-01-31 09:00" (UTC).'


def parse_duration(text: str, *, minimum: timedelta = timedelta(seconds=1),
                   maximum: timedelta = MAX_AHEAD) -> timedelta:
    """Parse ``"10m"``, ``"2h30m"``, ``"1h 30 min"``, ``"3 days"`` into a :class:`timedelta`.

    Raises
    ------
    ValueError
        When the text is not a duration, repeats a unit, or falls outside ``[minimum, maximum]``.
    """
    raw = text.strip().lower().replace(",", " ")
    if raw.startswith("in "):
        raw = raw[3:]
    if not raw or len(raw) > 64:
        raise ValueError(_HELP)
    pos, total, seen = 0, 0, set()
    for match in _PART.finditer(raw):
        if raw[pos:match.start()].strip():
            raise ValueError(_HELP)
        number, unit = match.groups()
        if unit not in _UNITS:
            raise ValueError(f'Unknown unit "{unit}". ' + _HELP)
        seconds = _UNITS[unit]
        if seconds in seen:
            raise ValueError(f'The unit "{unit}" appears twice. ' + _HELP)
        seen.add(seconds)
        total += int(number) * seconds
        pos = match.end()
    if not seen or raw[pos:].strip():
        raise ValueError(_HELP)
    if total > maximum.total_seconds():
        raise ValueError(f"That is too far ahead: at most {format_duration(maximum)}.")
    delta = timedelta(seconds=total)
    if delta < minimum:
        raise ValueError(f"That is too short: at least {format_duration(minimum)}.")
    return delta


_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_when(text: str, now: datetime, *, minimum: timedelta = timedelta(seconds=1),
               maximum: timedelta = MAX_AHEAD) -> datetime:
    """Parse a duration from ``now`` or a UTC moment into an aware UTC :class:`datetime`.

    Accepts what :func:`parse_duration` accepts, ``"HH:MM"`` (the next such time, UTC), and ISO
    dates and date-times (``"2030-01-31 09:00"``, ``"2030-01-31T09:00+02:00"``; naive ones are UTC).

    Raises
    ------
    ValueError
        When the text is neither, or the moment is in the past or too far ahead.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = text.strip()
    try:
        return now + parse_duration(raw, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        duration_error = exc
    match = _TIME.match(raw)
    moment: datetime | None = None
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f'"{raw}" is not a time of day. ' + _HELP)
        moment = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        if moment <= now:
            moment += timedelta(days=1)
    elif len(raw) <= 40 and re.match(r"^\d{4}-\d{2}-\d{2}", raw):
        try:
            moment = datetime.fromisoformat(raw.replace(" ", "T", 1))
        except ValueError:
            raise ValueError(f'"{raw}" is not a valid date. ' + _HELP) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    if moment is None:
        raise duration_error
    if moment - now < minimum:
        raise ValueError("That time is in the past. " + _HELP)
    if moment - now > maximum:
        raise ValueError(f"That is too far ahead: at most {format_duration(maximum)}.")
    return moment


def format_duration(delta: timedelta) -> str:
    """``timedelta(hours=2, minutes=30)`` → ``"2h 30m"``: the two largest units, rounded to the second."""
    seconds = round(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    units = (("d", 86400), ("h", 3600)) if seconds >= 86400 else (("h", 3600), ("m", 60)) if seconds >= 3600 \
        else (("m", 60), ("s", 1))
    parts: list[str] = []
    for unit, size in units:
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return " ".join(parts)
