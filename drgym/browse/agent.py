"""The paper's browsing agent: a chat model reads a page segment by segment and keeps what is new.

For each segment, in order, the model sees the question, the sub-question (the search query that surfaced the
page), the information gathered so far this episode and the segment, and answers with JSON::

    {"new_information": "...", "read_more": true}

Reading stops when the model says ``read_more: false``, after the last segment (a plain ``for`` loop over the
segments, so it cannot spin on the last one), after ``max_segments``, when the page's notes reach
``max_notes_chars``, when the time budget is spent, or when the model fails (:class:`~drgym.errors.LLMError`);
the notes gathered until then are returned, with ``error`` set in the last two cases.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from drgym.browse.base import PageNotes
from drgym.browse.memory import EpisodeMemory
from drgym.document import Document
from drgym.errors import ConfigError, LLMError
from drgym.llm.base import ChatClient, Message
from drgym.web.segment import segment_text

__all__ = ["BrowsingAgent", "SegmentReply", "build_messages", "parse_reply"]

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You help a researcher by reading web pages. You see one part of a page at a time. From each part you "
    "report only the information that is relevant to the researcher's question and not known yet, and you "
    "decide whether the rest of the page is worth reading. You answer with one JSON object and nothing else."
)

_USER_TEMPLATE = """Question: {question}
Sub-question (the search query that led to this page): {subquestion}
Page: {title} <{url}>

Information gathered so far:
{gathered}

Page content, part {part} of {total}:
<<<
{segment}
>>>

Instructions:
1. From this part, extract only information that helps answer the question or the sub-question and that is \
not already among the information gathered so far.
2. Copy numbers, dates, names and quantities exactly as written. If this part contradicts what was gathered, \
state both versions.
3. If nothing in this part is new and relevant, give an empty string.
4. Set "read_more" to true only if the rest of the page is likely to hold more relevant information.{last}

Reply with JSON only: {{"new_information": "<the new relevant information>", "read_more": true or false}}"""

_LAST_PART_NOTE = " This is the last part of the page, so set it to false."
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_INFO_FIELD = re.compile(r'"new_information"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)
_MORE_FIELD = re.compile(r'"read_more"\s*:\s*"?(true|false|yes|no|1|0)\b', re.IGNORECASE)
_MAX_REPLY_CHARS = 100_000  # with _MAX_JSON_STARTS, bounds the JSON scan on a runaway reply
_MAX_JSON_STARTS = 32  # a reply's object starts at one of its first "{"s; trying every one is quadratic
_NOTHING = frozenset({"", "none", "null", "n/a", "na", "nothing", "nothing new", "no new information"})


@dataclass(frozen=True)
class SegmentReply:
    """The model's answer for one segment.

    Attributes:
        new_information: The new relevant text ("" when the model found nothing).
        read_more: Whether to read the next segment.
        parsed: False when the reply held no recognisable JSON and its text was taken as the information.
    """

    new_information: str
    read_more: bool
    parsed: bool


class BrowsingAgent:
    """A :class:`~drgym.browse.base.Reader` that asks a chat model to read, segment by segment.

    Args:
        client: The chat model (the paper used an API model at temperature 0.6).
        segment_chars: Segment ("viewport") size in characters, cut at whitespace.
        max_segments: At most this many model calls per page.
        temperature: Sampling temperature of each call.
        max_tokens: Completion length cap of each call.
        time_budget_s: Wall-clock budget per page; keep it below the browser's own so partial notes survive.
        max_info_chars: Longest information kept from one segment (guards against runaway replies).
        max_notes_chars: Longest notes kept for one page; reading stops once reached.
        max_context_chars: Longest "information gathered so far" shown to the model.
    """

    def __init__(
        self,
        client: ChatClient,
        *,
        segment_chars: int = 40960,
        max_segments: int = 8,
        temperature: float = 0.6,
        max_tokens: int = 1024,
        time_budget_s: float = 50.0,
        max_info_chars: int = 2000,
        max_notes_chars: int = 6000,
        max_context_chars: int = 8000,
    ) -> None:
        positive = {
            "segment_chars": segment_chars,
            "max_segments": max_segments,
            "max_tokens": max_tokens,
            "time_budget_s": time_budget_s,
            "max_info_chars": max_info_chars,
            "max_notes_chars": max_notes_chars,
            "max_context_chars": max_context_chars,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"BrowsingAgent {name} must be positive, got {value!r}")
        if temperature < 0:
            raise ConfigError(f"BrowsingAgent temperature must be >= 0, got {temperature!r}")
        self.client = client
        self.segment_chars = segment_chars
        self.max_segments = max_segments
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.time_budget_s = time_budget_s
        self.max_info_chars = max_info_chars
        self.max_notes_chars = max_notes_chars
        self.max_context_chars = max_context_chars

    async def read(
        self, doc: Document, *, question: str, subquestion: str, memory: EpisodeMemory
    ) -> PageNotes:
        """Read ``doc`` segment by segment; record each segment's new information in ``memory``."""
        start = time.monotonic()
        deadline = start + self.time_budget_s
        content = doc.content.strip()
        segments = segment_text(content, self.segment_chars) if content else []
        total = len(segments)
        if not total:
            return PageNotes(doc.url, doc.title, "", 0, 0, error="the page has no readable text")
        kept: list[str] = []
        kept_chars = 0
        read = 0
        error: str | None = None
        for part, segment in enumerate(segments[: self.max_segments], start=1):
            remaining = deadline - time.monotonic()
            messages = build_messages(doc, question, subquestion, memory.render(self.max_context_chars),
                                      segment, part, total)
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                completion = await asyncio.wait_for(
                    self.client.complete(messages, temperature=self.temperature, max_tokens=self.max_tokens),
                    timeout=remaining,
                )
            except asyncio.TimeoutError:
                error = f"stopped at part {part} of {total}: time budget of {self.time_budget_s:g}s spent"
                break
            except LLMError as exc:
                error = f"the reading model failed on part {part} of {total}: {exc}"
                break
            read += 1
            reply = parse_reply(completion.text, max_chars=self.max_info_chars)
            if not reply.parsed:
                logger.debug("unparsed reply for %s part %d, kept as text: %.200r", doc.url, part, completion.text)
            info = reply.new_information[: self.max_notes_chars - kept_chars]
            if info:
                kept.append(info)
                kept_chars += len(info) + 1
                memory.add(doc.url, info)
            if not reply.read_more or kept_chars >= self.max_notes_chars:
                break
        return PageNotes(doc.url, doc.title, "\n".join(kept), read, total, error, time.monotonic() - start)


def build_messages(
    doc: Document, question: str, subquestion: str, gathered: str, segment: str, part: int, total: int
) -> list[Message]:
    """The chat messages asking the model about one segment."""
    user = _USER_TEMPLATE.format(
        question=question.strip(),
        subquestion=subquestion.strip() or "(none)",
        title=doc.title.strip() or "(untitled)",
        url=doc.url,
        gathered=gathered.strip() or "(nothing yet)",
        part=part,
        total=total,
        segment=segment,
        last=_LAST_PART_NOTE if part == total else "",
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_reply(text: str, *, max_chars: int = 2000) -> SegmentReply:
    """Read the model's answer, tolerating prose or code fences around the JSON and truncated JSON.

    Rules, in order: ``<think>`` blocks are dropped; the first JSON object with a ``new_information`` or
    ``read_more`` key is used (inside a code fence or anywhere in the text); failing that, the two fields are
    picked out of a truncated object; failing that, the whole text is taken as the information and reading
    stops. A missing or unreadable ``read_more`` means stop. The information is capped at ``max_chars``.
    Never raises.
    """
    text = _THINK_BLOCK.sub("", (text or "")[:_MAX_REPLY_CHARS]).strip()
    obj = _find_object(text)
    if obj is not None:
        info, more, parsed = _as_text(obj.get("new_information")), _as_bool(obj.get("read_more")), True
    elif match := _INFO_FIELD.search(text):
        more_match = _MORE_FIELD.search(text)
        info, parsed = _unescape(match.group(1)), True
        more = more_match is not None and more_match.group(1).lower() in {"true", "yes", "1"}
    else:
        info, more, parsed = text, False, False
    info = info.strip()
    if info.lower().strip(" .!") in _NOTHING:
        info = ""
    return SegmentReply(info[:max_chars], more, parsed)


def _find_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for candidate in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        starts = (i for i, ch in enumerate(candidate) if ch == "{")
        for start in itertools.islice(starts, _MAX_JSON_STARTS):
            try:
                obj, _ = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                continue
            if isinstance(obj, dict) and ("new_information" in obj or "read_more" in obj):
                return obj
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1"}
    return isinstance(value, (bool, int, float)) and bool(value)


def _unescape(raw: str) -> str:
    try:
        return json.loads(f'"{raw}"')
    except ValueError:
        return raw.replace('\\"', '"').replace("\\n", "\n")
