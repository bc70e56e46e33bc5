"""Cleaning raw model output into the text of one sample.

Model output is untrusted input. ``clean_text`` takes a reply that should hold one example and
removes what small and large models alike wrap around it: chat preambles ("Sure! Here is a
positive review:"), field labels ("Review:"), surrounding quotes and markdown, list markers,
trailing label tags ("(positive)", "Sentiment: positive") and explanations after the example.
It never invents text; it only cuts. What it cannot make sense of comes back flagged.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}

_PREAMBLE = re.compile(
    r"""^\s*(?:
        (?:sure|certainly|of\ course|okay|ok|absolutely|great|alright)\b[^\n:]{0,60}?[!.,:]\s*
      | (?:here(?:'s|\ is|\ are|\ you\ go)|this\ is|below\ is|i(?:'ve|\ have)\ written|i\ wrote)\b[^\n]{0,120}?(?::|\n|$)\s*
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_FIELD_TAG = re.compile(
    r"^\s*(?:\*\*)?(?:new\s+|generated\s+|example\s+)?(?:review|sentence|text|example|output|answer|response|"
    r"input|question|tweet|headline|article|news|sample|post|comment|message|statement)(?:\s*\d+)?\s*(?:\*\*)?\s*[:\-–]\s*",
    re.IGNORECASE,
)
_LIST_MARK = re.compile(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)")
_TRAILING_EXPLANATION = re.compile(
    r"\n\s*\n|\n\s*(?:note|explanation|this (?:review|sentence|text|example)|label|sentiment|category|class|emotion|topic)\b",
    re.IGNORECASE,
)


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_CODE_FENCE = re.compile(r"^```[a-zA-Z]*\n?|\n?```$")
_BOLD = re.compile(r"\*\*|__")
_BLANKS = re.compile(r"[ \t]+")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Cleaned:
    text: str
    notes: tuple[str, ...] = ()


def _strip_quotes(text: str) -> str:
    t = text.strip()
    for _ in range(2):
        if len(t) >= 2 and t[0] in _QUOTE_PAIRS and t[-1] == _QUOTE_PAIRS[t[0]]:
            inner = t[1:-1].strip()
            if t[0] in "'‘" and inner.count(t[0]) > 0 and t[0] == "'":
                break  # an apostrophe inside: the outer ones may be part of the text
            t = inner
    # a quote opened and never closed (output cut short), or closed and never opened
    if t[:1] in _QUOTE_PAIRS and t.count(t[0]) == 1 and _QUOTE_PAIRS[t[0]] not in t[1:]:
        t = t[1:].strip()
    if t[-1:] in ('"', "”") and t.count('"') + t.count("“") + t.count("”") == 1:
        t = t[:-1].strip()
    return t


def _from_json(text: str, keys: tuple[str, ...]) -> str | None:
    if "{" not in text:
        return None
    m = _JSON_OBJECT.search(text)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return None
    if isinstance(obj, dict):
        for k in keys:
            v = obj.get(k)
            if isinstance(v, str) and v.strip():
                return v
    return None


def strip_label_tag(text: str, labels: tuple[str, ...]) -> str:
    """Remove a trailing '(positive)', '- positive', 'Label: positive' and the like."""
    if not labels:
        return text
    return _label_tag(tuple(labels)).sub("", text).rstrip()


@functools.lru_cache(maxsize=64)
def _label_tag(labels: tuple[str, ...]) -> re.Pattern:
    alts = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    return re.compile(
        rf"\s*(?:[\(\[]\s*(?:label|sentiment|class|category)?\s*:?\s*(?:{alts})\s*[\)\]]"
        rf"|[-–—|]\s*(?:{alts})|(?:label|sentiment|class|category)\s*[:=]\s*(?:{alts}))\s*[.!]?\s*$",
        re.IGNORECASE,
    )


def clean_text(raw: str, *, labels: tuple[str, ...] = (), json_keys: tuple[str, ...] = ("input", "text")) -> Cleaned:
    """Cut one example out of a model reply."""
    notes: list[str] = []
    text = raw.replace("\r\n", "\n").strip()
    as_json = _from_json(text, json_keys)
    if as_json is not None:
        text, notes = as_json.strip(), ["json"]
    if "```" in text:
        text = _CODE_FENCE.sub("", text)
    text = text.strip()
    for _ in range(3):  # preamble, then field tag, possibly nested ("Sure! Review: ...")
        before = text
        m = _PREAMBLE.match(text)
        if m and m.end() < len(text):
            text = text[m.end():].lstrip()
            notes.append("preamble")
        m = _FIELD_TAG.match(text)
        if m and m.end() < len(text):
            text = text[m.end():].lstrip()
            notes.append("field_tag")
        text = _LIST_MARK.sub("", text, count=1)
        text = _strip_quotes(text)
        if text == before:
            break
    m = _TRAILING_EXPLANATION.search(text)
    if m and m.start() > 0:
        text = text[: m.start()].rstrip()
        notes.append("trailing_text")
    if "**" in text or "__" in text:
        text = _BOLD.sub("", text)
    text = strip_label_tag(text, labels)
    text = _strip_quotes(text)
    text = _BLANKS.sub(" ", text).strip()
    return Cleaned(text=text, notes=tuple(notes))


@functools.lru_cache(maxsize=4096)  # the echo and duplicate checks both ask for each sample's text
def normalize_for_dedup(text: str) -> str:
    """Lower case, letters and digits only, single spaces: equal after this means duplicate."""
    return " ".join(_WORD.findall(text.lower()))
