"""The text protocol between a policy and the environment.

A policy turn is plain text in the Qwen2.5 tool-calling style used by DeepResearcher: a ``<think>`` block
followed by either one ``<tool_call>`` holding a JSON object or one ``<answer>``. This module turns such text
into a :class:`ParsedTurn` (never raising: every mistake becomes a message that tells the policy how to fix
it), and renders tool results back into observation text in which web content cannot forge protocol tags.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from drgym.search.base import Result

__all__ = [
    "TOOL_NAMES",
    "ParsedTurn",
    "TagBlock",
    "ToolCall",
    "TurnTags",
    "clean_text",
    "escape_tags",
    "parse_turn",
    "render_browse_results",
    "render_error",
    "render_search_results",
    "scan_turn",
    "system_prompt",
    "tags_balanced",
    "tool_schemas",
    "truncate_after_action",
    "wrap_tool_response",
]

TOOL_NAMES = ("web_search", "browse_webpage")

# The one list argument each tool takes (the paper's argument names).
_TOOL_ARG = {"web_search": "query", "browse_webpage": "url_list"}

_FORMAT_ERRORS = frozenset({"unbalanced_tags", "no_action", "too_long"})
_TOOL_ERRORS = frozenset({"bad_json", "unknown_tool", "bad_arguments"})

# Tags of the turn format; exact lowercase spelling, as the chat template and the paper's reward use them.
_TAG_NAMES = ("think", "tool_call", "answer")
_TAG_RE = re.compile(r"<(/?)(think|tool_call|answer)>")
# Near-misses of the tags above (odd case, inner spaces, dash), used only to explain an error.
_LOOSE_TAG_RE = re.compile(r"<\s*/?\s*(?:think|tool[\s_-]?call|answer)\s*>", re.IGNORECASE)
# Control characters that str.split() counts as whitespace, besides \t and \n: they separate words, so they
# become a space ("Barack\rObama" is two words).
_SPACING_CONTROL_RE = re.compile(r"[\r\x0b\x0c\x1c-\x1f\x85]")
# The other C0 controls, DEL, the other C1 controls, lone surrogates: never meaningful, often harmful downstream.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff]")
# Anything that looks like a protocol or chat-template tag once a model reads it.
_PROTOCOL_NAMES = r"(?:think|tool_call|tool_response|tools|answer)\b"
_FULL_TAG_RE = re.compile(r"<(\s*/?\s*" + _PROTOCOL_NAMES + r"[^<>]*)>", re.IGNORECASE)
_TAG_START_RE = re.compile(r"<(?=\s*/?\s*" + _PROTOCOL_NAMES + r")", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)\s*```", re.DOTALL)

# strict=False accepts raw newlines inside strings (a frequent slip); control characters are removed later.
_LENIENT_JSON = json.JSONDecoder(strict=False)

_VALID_TOOLS = ", ".join(f'"{t}"' for t in TOOL_NAMES)
_EXAMPLE_SEARCH = '{"name": "web_search", "arguments": {"query": ["first query", "second query"]}}'
_EXAMPLE_BROWSE = '{"name": "browse_webpage", "arguments": {"url_list": ["https://example.org/page"]}}'
_SNIPPET_CHARS = 120

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


# --------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ToolCall:
    """A validated tool call: a known tool name and its normalised arguments (lists of clean strings)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedTurn:
    """What one policy turn asks for.

    Attributes:
        think: Content of the first ``<think>`` block, stripped, or None.
        tool_call: The action when it is a valid tool call.
        answer: The action when it is an answer (stripped; may be empty).
        format_ok: False when the turn breaks the paper's format rule (the reward's −1 case).
        error: A message for the policy saying what was wrong and how to fix it (no "Error:" prefix; it
            names tags without angle brackets and escapes quoted text, so it is safe to show as is).
        error_kind: ``unbalanced_tags``, ``no_action`` or ``too_long`` (format errors), ``bad_json``,
            ``unknown_tool`` or ``bad_arguments`` (tool errors: the format is fine, the call is not).
        extra_tool_calls: Complete ``<tool_call>`` blocks present but not used (only the first action counts).
        action_end: Where the action's closing tag ends in the text (None without a complete action): the turn
            cut there is what a model stopping at ``</tool_call>`` or ``</answer>`` would have produced.
    """

    think: str | None = None
    tool_call: ToolCall | None = None
    answer: str | None = None
    format_ok: bool = True
    error: str | None = None
    error_kind: str | None = None
    extra_tool_calls: int = 0
    action_end: int | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """``tool_call``, ``answer``, ``tool_error`` (a malformed call) or ``format_error``."""
        if not self.format_ok:
            return "format_error"
        if self.tool_call is not None:
            return "tool_call"
        if self.answer is not None:
            return "answer"
        return "tool_error"

    def to_info(self) -> dict[str, Any]:
        """A JSON-serialisable summary, for the environment's ``info["action"]``."""
        call = self.tool_call
        return {
            "kind": self.kind,
            "tool": call.name if call is not None else None,
            "arguments": {k: list(v) for k, v in call.arguments.items()} if call is not None else None,
            "answer": self.answer,
            "format_ok": self.format_ok,
            "error": self.error,
            "error_kind": self.error_kind,
            "extra_tool_calls": self.extra_tool_calls,
        }


# ----------------------------------------------------------------------------------- schemas and prompt


def tool_schemas() -> list[dict[str, Any]]:
    """The two tools as OpenAI function schemas (a fresh copy on every call, safe to mutate)."""
    return [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "description": (
                    "Search the web. Returns, for each query, the top results with title, URL and snippet."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Search queries; up to 3 queries are used.",
                        }
                    },
                    "required": ["query"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "browse_webpage",
                "description": (
                    "Read web pages and return the information on them that is relevant to the question."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "url_list": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "URLs to read; only URLs from this episode's search results.",
                        }
                    },
                    "required": ["url_list"],
                },
            },
        },
    ]


def _format_date(today: _dt.date | str | None) -> str:
    if today is None:
        today = _dt.date.today()
    if isinstance(today, str):
        text = clean_text(today).strip()
        try:
            today = _dt.date.fromisoformat(text)
        except ValueError:
            return text or _format_date(None)
    if isinstance(today, _dt.datetime):
        today = today.date()
    # Names spelled out here rather than with strftime("%A"), which follows the process locale.
    return f"{_WEEKDAYS[today.weekday()]}, {_MONTHS[today.month - 1]} {today.day}, {today.year} ({today})"


def system_prompt(today: _dt.date | str | None = None) -> str:
    """The system prompt of an episode: date, task, tools (in Qwen2.5's ``<tools>`` block) and output format.

    Args:
        today: The date the policy is told; an ISO string is rendered like a date, any other string is used
            verbatim, None means the machine's current date (the only non-deterministic case).

    The tool schemas are embedded in the prompt, so do not also pass ``tools=`` to a chat template.
    """
    tools = "\n".join(json.dumps(schema, ensure_ascii=False) for schema in tool_schemas())
    return f"""Today is {_format_date(today)}.

You are a research assistant. The question you will be given needs deep research: do not rely on memory \
alone. Work out what you need to find, search the web, read the most promising pages, and check what you \
learn before you answer.

# Tools

You have two tools:
- web_search: runs web searches and returns, for each query, the top results with a title, a URL and a \
short snippet. Up to 3 queries per call are used.
- browse_webpage: reads web pages and returns the information on them that is relevant to the question. \
Only URLs that appeared in this episode's search results can be read.

The function signatures are given within <tools></tools> XML tags:
<tools>
{tools}
</tools>

# Output format

Each reply must take exactly one of these two forms.

To call a tool:
<think>
what you know so far and what to look up next
</think>
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>

To give the final answer:
<think>
why the information you gathered answers the question
</think>
<answer>
the answer
</answer>

Rules:
- Only one tool call per reply is used; any further tool calls are ignored. The result comes back \
within <tool_response></tool_response> tags.
- Answer only once you have enough information.
- Keep the answer short: just the entity, date, number or phrase asked for, with no explanation.
- If the question is a yes-or-no question, answer only yes or no."""


# ------------------------------------------------------------------------------------------------ parsing


def clean_text(text: str) -> str:
    """Policy or web text made safe to show and score: control characters that separate words (``\\r``,
    ``\\v``, ``\\f``, ``\\x1c``-``\\x1f``, ``\\x85``) become a space, the others and lone surrogates are dropped;
    tab and newline stay."""
    return _CONTROL_RE.sub("", _SPACING_CONTROL_RE.sub(" ", text))


def _snippet(text: str, limit: int = _SNIPPET_CHARS) -> str:
    """Policy text quoted in an error message: one line, bounded, tags escaped."""
    text = " ".join(clean_text(text).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return escape_tags(text)


def _odd_tag_hint(text: str) -> str:
    # The inner text is shown without angle brackets, so the message survives escape_tags unchanged.
    odd = sorted(
        {m.group(0)[1:-1] for m in _LOOSE_TAG_RE.finditer(text) if not _TAG_RE.fullmatch(m.group(0))}
    )
    if not odd:
        return ""
    shown = ", ".join(f'"{tag}"' for tag in odd[:3])
    return f" Tag names are exact, lowercase and without spaces; found the tags {shown}."


class TagBlock(NamedTuple):
    """A complete ``think``, ``tool_call`` or ``answer`` block of a turn (offsets into the turn's text)."""

    tag: str
    start: int  # start of the content
    stop: int  # end of the content
    end: int  # end of the closing tag
    nested: bool  # another of the three tags was open when this one closed


@dataclass(frozen=True)
class TurnTags:
    """The tags of one policy turn, as the environment and the reward read them.

    The action is the first ``tool_call`` or ``answer`` block that closes with no other tag open: an answer
    or tool call written inside a ``think`` block is part of the thinking, not an action. So the turn cut
    right after the action's closing tag (what a model stopping there produces, and what the environment
    records) has every tag closed, and is judged exactly as the whole turn was.

    Attributes:
        blocks: The complete blocks, in the order they close (a re-opened tag restarts its block).
        action: The action block, or None.
        problem: The first tag-balance problem in text order, or None.
    """

    blocks: tuple[TagBlock, ...]
    action: TagBlock | None
    problem: str | None

    @property
    def think(self) -> TagBlock | None:
        """The first complete ``think`` block."""
        return next((b for b in self.blocks if b.tag == "think"), None)

    @property
    def tool_calls(self) -> int:
        """Complete ``tool_call`` blocks (only the action is ever run)."""
        return sum(b.tag == "tool_call" for b in self.blocks)


def scan_turn(text: str) -> TurnTags:
    """One pass over a policy turn's tags: its blocks, its action and the first balance problem.

    Balance: each of ``think``, ``tool_call`` and ``answer`` must alternate open, close, open, close...: no
    close before its open, no second open before the close (no nesting of a tag in itself), nothing left open.
    """
    opened: dict[str, int | None] = {"think": None, "tool_call": None, "answer": None}
    blocks: list[TagBlock] = []
    problem: str | None = None
    for m in _TAG_RE.finditer(text):
        closing, name = m.groups()
        start = opened[name]
        if not closing:
            if start is not None and problem is None:
                problem = f'the "{name}" tag is opened again before it is closed (tags cannot be nested).'
            opened[name] = m.end()
        elif start is not None:
            opened[name] = None
            nested = any(v is not None for v in opened.values())
            blocks.append(TagBlock(name, start, m.start(), m.end(), nested))
        elif problem is None:
            problem = f'a closing "{name}" tag comes before its opening tag.'
    if problem is None:
        problem = next((f'the "{n}" tag is never closed.' for n, s in opened.items() if s is not None), None)
    action = next((b for b in blocks if b.tag != "think" and not b.nested), None)
    return TurnTags(tuple(blocks), action, problem)


def tags_balanced(text: str) -> bool:
    """True when every ``think``, ``tool_call`` and ``answer`` tag is opened and closed in turn."""
    return scan_turn(text).problem is None


def truncate_after_action(text: str) -> str:
    """The turn cut right after its action's closing tag, as a model stopping at ``</tool_call>`` or
    ``</answer>`` would have produced it (text after that, such as an invented ``<tool_response>``, is not
    part of the conversation). Text without a complete action is returned unchanged."""
    action = scan_turn(text).action
    return text if action is None else text[: action.end]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    for kind, name in ((str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


def _decode_object(payload: str) -> tuple[Any, str | None]:
    """Decode the tool call's JSON; returns (value, None) or (None, a message saying what is wrong)."""
    text = payload.strip()
    fenced = _FENCE_RE.fullmatch(text) if "```" in text else None
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        return None, "the tool_call block is empty."
    try:
        value, end = _LENIENT_JSON.raw_decode(text)
    except json.JSONDecodeError as exc:
        return None, f"the tool call is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
    except (ValueError, RecursionError):
        return None, "the tool call is not valid JSON (it is nested too deeply or holds an invalid number)."
    rest = text[end:].strip()
    if rest:
        return None, f'unexpected text after the JSON object: "{_snippet(rest)}".'
    return value, None


def _tool_error(kind: str, message: str, think: str | None, extra: int, end: int, tool: str = "") -> ParsedTurn:
    example = _EXAMPLE_BROWSE if tool == "browse_webpage" else _EXAMPLE_SEARCH
    return ParsedTurn(
        think=think,
        format_ok=True,
        error=f"Invalid tool call: {message} Write one JSON object, for example {example}",
        error_kind=kind,
        extra_tool_calls=extra,
        action_end=end,
    )


def _validate_arguments(name: str, arguments: Any) -> tuple[dict[str, list[str]] | None, str | None]:
    key = _TOOL_ARG[name]
    what = "search queries" if key == "query" else "URLs"
    if isinstance(arguments, str):
        # The OpenAI wire format carries arguments as a JSON string; accept it when it holds an object.
        decoded, problem = _decode_object(arguments)
        if problem is None and isinstance(decoded, dict):
            arguments = decoded
    if not isinstance(arguments, dict):
        return None, f'"arguments" must be a JSON object, got {_json_type(arguments)}.'
    if key not in arguments:
        found = ", ".join(f'"{_snippet(str(k), 40)}"' for k in list(arguments)[:5]) or "none"
        return None, f'{name} needs the argument "{key}", a list of {what} (arguments given: {found}).'
    value = arguments[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None, f'"{key}" must be a list of strings, got {_json_type(value)}.'
    if not value:
        return None, f'"{key}" is empty; give at least one of the {what}.'
    items: list[str] = []
    for i, item in enumerate(value, 1):
        if not isinstance(item, str):
            return None, f'item {i} of "{key}" is {_json_type(item)}, not a string; {what} must be strings.'
        item = clean_text(item).strip()
        if not item:
            return None, f'item {i} of "{key}" is blank.'
        items.append(item)
    return {key: items}, None


def _parse_tool_call(payload: str, think: str | None, extra: int, end: int) -> ParsedTurn:
    value, problem = _decode_object(payload)
    if problem is not None:
        return _tool_error("bad_json", problem, think, extra, end)
    if not isinstance(value, dict):
        return _tool_error(
            "bad_json", f"the tool call must be a JSON object, got {_json_type(value)}.", think, extra, end
        )
    if "name" not in value:
        return _tool_error("bad_json", 'the tool call object has no "name".', think, extra, end)
    name = value["name"]
    valid = _VALID_TOOLS
    if not isinstance(name, str):
        message = f'"name" must be a string, got {_json_type(name)}; valid tools: {valid}.'
        return _tool_error("unknown_tool", message, think, extra, end)
    if name.strip() not in _TOOL_ARG:
        shown = _snippet(name, 60)
        close = difflib.get_close_matches(shown, TOOL_NAMES, n=1)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        message = f'unknown tool "{shown}"; valid tools: {valid}.{hint}'
        return _tool_error("unknown_tool", message, think, extra, end)
    name = name.strip()
    if "arguments" not in value:
        message = f'the call to {name} has no "arguments" object.'
        return _tool_error("bad_arguments", message, think, extra, end, name)
    arguments, problem = _validate_arguments(name, value["arguments"])
    if problem is not None:
        return _tool_error("bad_arguments", problem, think, extra, end, name)
    return ParsedTurn(
        think=think, tool_call=ToolCall(name, arguments), format_ok=True, extra_tool_calls=extra, action_end=end
    )


def _format_error(kind: str, message: str, think: str | None = None) -> ParsedTurn:
    return ParsedTurn(think=think, format_ok=False, error=message, error_kind=kind)


def parse_turn(text: str, *, max_chars: int = 32768) -> ParsedTurn:
    """Parse one policy turn. Never raises: every problem is reported in the returned :class:`ParsedTurn`.

    Format errors (``format_ok=False``, the paper's −1): text longer than ``max_chars``, unbalanced
    ``think``/``tool_call``/``answer`` tags, or neither a tool call nor an answer outside a think block.
    Otherwise the action is the tool call or answer that closes first with no other tag open
    (:func:`scan_turn`); a malformed call is a *tool error* (``format_ok=True``)
    with a message that teaches the right form. Arguments are normalised: a bare string becomes a one-item
    list, items are stripped of control characters and whitespace, and keys other than the tool's own are
    dropped.
    """
    if not isinstance(text, str):
        return _format_error("no_action", f"a turn must be text, got {type(text).__name__}.")
    if len(text) > max_chars:
        return _format_error(
            "too_long",
            f"the reply is {len(text)} characters long; the limit is {max_chars}. Keep the thinking short "
            "and end with one tool call or one answer.",
        )
    tags = scan_turn(text)
    think = clean_text(text[tags.think.start : tags.think.stop]).strip() if tags.think else None
    if tags.problem is not None:
        return _format_error(
            "unbalanced_tags",
            f"the tags are unbalanced: {tags.problem} Close every think, tool_call and answer tag before "
            "opening it again." + _odd_tag_hint(text),
            think,
        )
    action = tags.action
    if action is None:
        nested = any(b.tag != "think" for b in tags.blocks)
        return _format_error(
            "no_action",
            "the reply has neither a tool call nor an answer. End it with a tool_call block holding one JSON "
            f"object, such as {_EXAMPLE_SEARCH}, or with an answer block holding a short answer."
            + (" A tool call or answer inside a think block is part of the thinking: close think first."
               if nested else "")
            + _odd_tag_hint(text),
            think,
        )
    if action.tag == "answer":
        answer = clean_text(text[action.start : action.stop]).strip()
        return ParsedTurn(
            think=think, answer=answer, format_ok=True, extra_tool_calls=tags.tool_calls, action_end=action.end
        )
    return _parse_tool_call(text[action.start : action.stop], think, tags.tool_calls - 1, action.end)


# ---------------------------------------------------------------------------------------------- rendering


def escape_tags(text: str) -> str:
    """Neutralise protocol and chat-template tags in untrusted text (web pages, snippets, titles).

    ``<answer>`` becomes ``&lt;answer&gt;`` (any case, with or without spaces or attributes; also
    ``tool_call``, ``tool_response``, ``tools`` and ``think``), and ``<|`` becomes ``&lt;|`` so special tokens
    such as ``<|im_end|>`` cannot reach a tokenizer. Idempotent; the output never contains a ``<`` that
    starts one of these tags.
    """
    if "<" not in text:
        return text  # the common case for snippets and notes; skips three regex passes
    text = _FULL_TAG_RE.sub(r"&lt;\1&gt;", text)
    # A "<" left before a tag name (no closing ">" found) is still escaped, so no tag can re-form.
    text = _TAG_START_RE.sub("&lt;", text)
    return text.replace("<|", "&lt;|")


def _safe(text: Any) -> str:
    """Untrusted value → clean, escaped text."""
    return escape_tags(clean_text(text if isinstance(text, str) else str(text)))


def _one_line(text: Any) -> str:
    return escape_tags(_line(text))


def wrap_tool_response(content: str) -> str:
    """The observation a raw-text policy appends: ``<tool_response>\\n{content}\\n</tool_response>``.

    ``content`` is escaped again (a no-op for the renderers' output), so it cannot close the block early.
    """
    return "<tool_response>\n" + escape_tags(content) + "\n</tool_response>"


def _line(text: Any) -> str:
    """One line of untrusted text: control characters dropped, whitespace runs collapsed (not yet escaped)."""
    return " ".join(clean_text(text if isinstance(text, str) else str(text)).split())


def render_search_results(per_query: Sequence[tuple[str, Sequence[Result]]]) -> str:
    """Search results as readable text: per query, numbered title, URL and snippet (or "no results").

    Fields are cleaned and flattened one by one and the finished block is escaped once (cheaper than per
    field, and just as safe: the lines added here hold no ``<``).
    """
    if not per_query:
        return "No search was run."
    sections = []
    for query, results in per_query:
        shown_query = _line(query)
        if not results:
            sections.append(f'No results for query "{shown_query}".')
            continue
        lines = [f'Results for query "{shown_query}":']
        for i, result in enumerate(results, 1):
            title = _line(getattr(result, "title", "")) or "(no title)"
            entry = f"{i}. {title}\n   URL: {_line(getattr(result, 'url', ''))}"
            snippet = _line(getattr(result, "snippet", ""))
            lines.append(f"{entry}\n   {snippet}" if snippet else entry)
        sections.append("\n".join(lines))
    return escape_tags("\n\n".join(sections))


def render_browse_results(pages: Sequence[Mapping[str, Any]]) -> str:
    """What the browsing step learned, per URL: the notes, or the error that stopped reading the page."""
    if not pages:
        return "No pages were read."
    sections = []
    for i, page in enumerate(pages, 1):
        url = _one_line(page.get("url") or "")
        title = _one_line(page.get("title") or "")
        header = f"Page {i}: {title}\nURL: {url}" if title else f"Page {i}\nURL: {url}"
        error = page.get("error")
        if error:
            body = f"Error: this page could not be read ({_one_line(error)})."
        else:
            body = _safe(page.get("notes") or "").strip() or "(nothing relevant to the question on this page)"
        sections.append(f"{header}\n{body}")
    return "\n\n".join(sections)


def render_error(message: str) -> str:
    """A short error observation, always starting with ``Error:``."""
    text = _safe(message).strip()
    if text.lower().startswith("error:"):
        text = text[len("error:") :].lstrip()
    if len(text) > 2000:
        text = text[:1997] + "..."
    return f"Error: {text or 'the request failed.'}"
