"""English numbers written as a voice should say them: dates, times, money, percentages, ordinals, years,
measures with their units, and plain numbers, spelled out in words (num2words does the counting). What a
Fish request's `normalize` does, and every reply's speech: a voice that reads "3:30" or "$4.50" digit by
digit, or not at all, says it as a person would. Control markers (markers.py) are left as they are.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable

from num2words import num2words

from .markers import split_markers

# A currency's symbol: its unit and its hundredth, singular and plural.
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_SCALES = ("thousand", "million", "billion", "trillion")
# A unit after a number: its spoken name, singular and plural.
_UNITS: dict[str, tuple[str, str]] = {
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "ml": ("milliliter", "milliliters"),
    "l": ("liter", "liters"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "ms": ("millisecond", "milliseconds"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
}
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = "|".join(re.escape(unit) for unit in sorted(_UNITS, key=len, reverse=True))
_YEAR_BEFORE = r"(?:in|since|by|from|until|till|before|after|of|year|around|circa)"

_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []


def _rule(pattern: str, flags: int = 0) -> Callable[[Callable[[re.Match[str]], str]], Callable[[re.Match[str]], str]]:
    def add(say: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        _RULES.append((re.compile(pattern, flags), say))
        return say

    return add


def _value(text: str) -> int | float:
    plain = text.replace(",", "")
    return float(plain) if "." in plain else int(plain)


def _words(value: int | float) -> str:
    return str(num2words(value)).replace(",", "")


@_rule(r"\b(\d{4})-(\d{2})-(\d{2})\b")
def _date(match: re.Match[str]) -> str:
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        return match.group(0)
    return f"{calendar.month_name[month]} {num2words(day, to='ordinal')}, {num2words(year, to='year')}"


@_rule(r"\b([01]?\d|2[0-3]):([0-5]\d)(?:\s?([ap])\.?m\.?\b)?", re.IGNORECASE)
def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    said = [_words(hour)]
    if minute == 0:
        said.append("o'clock" if match.group(3) is None else "")
    else:
        said.append(("oh " if minute < 10 else "") + _words(minute))
    if match.group(3):
        said.append(f"{match.group(3).lower()} m")
    return " ".join(part for part in said if part)


@_rule(rf"([$£€])({_NUMBER})(?:\s({'|'.join(_SCALES)})\b)?")
def _money(match: re.Match[str]) -> str:
    symbol, amount, scale = match.groups()
    one, many, hundredth, hundredths = _CURRENCIES[symbol]
    if scale:  # "$3 million": three million dollars
        return f"{_words(_value(amount))} {scale} {many}"
    whole, _, fraction = amount.replace(",", "").partition(".")
    units, cents = int(whole), round(float(f"0.{fraction or 0}") * 100)
    said = [f"{_words(units)} {one if units == 1 else many}"] if units or not cents else []
    if cents:
        said.append(f"{_words(cents)} {hundredth if cents == 1 else hundredths}")
    return " and ".join(said)


@_rule(rf"(?<![\w.])({_NUMBER})\s?%")
def _percent(match: re.Match[str]) -> str:
    return f"{_words(_value(match.group(1)))} percent"


@_rule(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
def _ordinal(match: re.Match[str]) -> str:
    return str(num2words(int(match.group(1)), to="ordinal"))


@_rule(r"\b(1[1-9]\d0|20\d0)s\b")
def _decade(match: re.Match[str]) -> str:
    year = str(num2words(int(match.group(1)), to="year"))  # the 1990s: nineteen nineties
    return year[:-1] + "ies" if year.endswith("y") else year + "s"


@_rule(rf"\b{_YEAR_BEFORE}\s(1[1-9]\d\d|20\d\d)\b", re.IGNORECASE)
def _year(match: re.Match[str]) -> str:
    before = match.group(0)[: match.start(1) - match.start(0)]
    return before + str(num2words(int(match.group(1)), to="year"))


@_rule(rf"(?<![\w.-])(-?)({_NUMBER})\s?({_UNIT})(?![\w/])")
def _measure(match: re.Match[str]) -> str:
    value = _value(match.group(2))
    singular, plural = _UNITS[match.group(3)]
    return f"{'minus ' if match.group(1) else ''}{_words(value)} {singular if value == 1 else plural}"


@_rule(r"(?<![\w.-])(\d{1,3})-(\d{1,3})(?![\w.-]*\d)")
def _range(match: re.Match[str]) -> str:
    low, high = int(match.group(1)), int(match.group(2))
    return f"{_words(low)} to {_words(high)}" if low < high else match.group(0)  # else a code: left as it is


@_rule(rf"(?<![\w.-])(-?)({_NUMBER})(?![\w.]*\d|-\d)")
def _plain(match: re.Match[str]) -> str:
    return ("minus " if match.group(1) else "") + _words(_value(match.group(2)))


def spell_out_numbers(text: str) -> str:
    """`text` with its numbers in words, its markers untouched."""
    runs = []
    for run, is_marker in split_markers(text):
        if not is_marker:
            for pattern, say in _RULES:
                run = pattern.sub(say, run)
        runs.append(run)
    return "".join(runs)
