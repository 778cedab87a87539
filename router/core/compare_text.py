"""Text comparators: how two LLM answers agree, by kind (compare `kind`s).

    length_ratio   len(shadow) / len(primary), in characters, within [min, max]
                   (default 0.5..2); two empty texts agree
    refusal        both refuse or neither does: a refusal is a text whose first
                   REFUSAL_SCAN characters match one of the patterns
                   (case-insensitive regular expressions; REFUSALS by default)
    json_valid     both texts are valid JSON (a ``` fence around it is taken
                   off; with a schema, valid against it), or neither is: the
                   confusion matrix (valid/invalid) tells the two apart, so
                   identical texts always agree, as on every kind
    finish_reason  the same finish reason (stop, length, tool_calls, ...)
    tool_calls     the same function names called, in any order
    overlap        Jaccard similarity of the two sets of lower-case words,
                   at least `min` (default 0.5); two empty texts agree

Each returns a `Judged`: agree, the distance shown as "mean diff" (0 is
identical: |ratio - 1|, 1 - Jaccard; none for the others) and the pair of
labels the confusion matrix counts (refused/answered, valid/invalid, the
finish reasons, the call names). Every kind reads text and bounds its own
work: a refusal is looked for at the start of the answer only; words are
counted in the first MAX_CHARS characters. Measured at 1,000 tokens (about
5,000 characters): see bench/text_cost.py and the README.

Pure: router/core/compare_kinds.py calls `judge` for these kinds.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

TEXT_KINDS: Final = (
    "length_ratio",
    "refusal",
    "json_valid",
    "finish_reason",
    "tool_calls",
    "overlap",
)
REFUSAL_SCAN: Final = 400  # characters at the start of an answer searched for a refusal
MAX_CHARS: Final = 200_000  # characters of a text read by overlap
REFUSALS: Final = (
    r"\bI(?:'m| am)? (?:sorry|afraid)\b.{0,40}\b(?:can(?:'|no)t|cannot|unable|won't)\b",
    r"\bI (?:can(?:'|no)t|cannot|won't|will not|am unable to|'m unable to) "
    r"(?:help|assist|provide|comply|do that|fulfil|support|answer)",
    r"\bI(?:'m| am) not able to (?:help|assist|provide|comply)",
    r"\bAs an AI(?: language model)?\b",
)
_WORD: Final = re.compile(r"\w+")
_FENCE: Final = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)
_NO_SCHEMA: Final = ""


@dataclass(frozen=True, slots=True)
class Judged:
    agree: bool
    reason: str = ""  # "type" when a value is not what the kind reads
    diff: float | None = None
    labels: tuple[str, str] | None = None


def judge(
    kind: str,
    a: object,
    b: object,
    *,
    band: tuple[float, float] = (0.5, 2.0),
    patterns: Sequence[str] = (),
    schema: str = _NO_SCHEMA,
    min_overlap: float = 0.5,
) -> Judged:
    """Compare two values of one text field by `kind` (one of TEXT_KINDS)."""
    if kind == "finish_reason":
        pa, pb = _label(a), _label(b)
        return Judged(pa == pb, labels=(pa, pb))
    if kind == "tool_calls":
        return _tool_calls(a, b)
    ta, tb = text_of(a), text_of(b)
    if ta is None or tb is None:
        return Judged(False, "type")
    if kind == "length_ratio":
        return _length(ta, tb, band)
    if kind == "refusal":
        ra, rb = refuses(ta, tuple(patterns)), refuses(tb, tuple(patterns))
        return Judged(ra == rb, labels=(_refused(ra), _refused(rb)))
    if kind == "json_valid":
        va, vb = json_valid(ta, schema), json_valid(tb, schema)
        return Judged(va == vb, labels=("valid" if va else "invalid", "valid" if vb else "invalid"))
    j = jaccard(ta, tb)
    return Judged(j >= min_overlap, diff=1.0 - j)


def text_of(value: object) -> str | None:
    """A text value: a string; null is the empty text (a choice with no content)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def _label(value: object) -> str:
    return "null" if value is None else value if isinstance(value, str) else json.dumps(value)


def _refused(flag: bool) -> str:
    return "refusal" if flag else "answer"


def _length(a: str, b: str, band: tuple[float, float]) -> Judged:
    if not a:
        return Judged(not b, diff=0.0 if not b else None)
    ratio = len(b) / len(a)
    return Judged(band[0] <= ratio <= band[1], diff=abs(ratio - 1.0))


@functools.lru_cache(maxsize=64)
def refusal_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled alternation of the patterns (config validation compiled each)."""
    chosen = patterns or REFUSALS
    return re.compile("|".join(f"(?:{p})" for p in chosen), re.IGNORECASE | re.DOTALL)


def refuses(text: str, patterns: tuple[str, ...] = ()) -> bool:
    """A refusal says so at its start: only the first REFUSAL_SCAN characters are read."""
    return refusal_pattern(patterns).search(text[:REFUSAL_SCAN].replace("’", "'")) is not None


def json_valid(text: str, schema: str = _NO_SCHEMA) -> bool:
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not schema:
        return True
    return bool(validator(schema)(doc))


@functools.lru_cache(maxsize=32)
def validator(schema: str) -> Any:
    """A compiled JSON-schema check (fastjsonschema: drafts 4, 6 and 7) returning a
    bool; the schema comes as its JSON text (config validation compiled it once)."""
    import fastjsonschema  # late: only routes with a schema need it

    check = fastjsonschema.compile(json.loads(schema))

    def valid(doc: object) -> bool:
        try:
            check(doc)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return valid


def words(text: str) -> set[str]:
    return set(_WORD.findall(text[:MAX_CHARS].lower()))


def jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| of the word sets; 1 for two texts without words."""
    if a == b:
        return 1.0
    wa, wb = words(a), words(b)
    union = len(wa | wb)
    return len(wa & wb) / union if union else 1.0


def _tool_calls(a: object, b: object) -> Judged:
    na, nb = _names(a), _names(b)
    if na is None or nb is None:
        return Judged(False, "type")
    la, lb = ",".join(na) or "(none)", ",".join(nb) or "(none)"
    return Judged(na == nb, labels=(la, lb))


def _names(value: object) -> list[str] | None:
    """Sorted call names: a list of names (protocol openai), or of tool-call objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        return None
    out: list[str] = []
    for v in value:
        if isinstance(v, dict):
            fn = v.get("function")
            v = fn.get("name") if isinstance(fn, dict) else v.get("name")
        out.append(v if isinstance(v, str) else json.dumps(v))
    return sorted(out)
