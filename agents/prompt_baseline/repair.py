"""Turn imperfect model output into a valid protocol turn, or say that nothing usable is in it.

Untrained models follow the ``<think>…</think><tool_call>{…}</tool_call>`` format only roughly: they drop the
closing tag (a server's stop string removes it), wrap the JSON in a code fence, write it with no tags at all,
use ReAct's ``Action: web_search("…")``, misspell the tool or the argument name, or leave the JSON unfinished.
A prompt-engineered baseline is judged on what the model knows, not on how well it copies tags, so every such
turn is repaired into the protocol's exact form. The repair never invents an action: when the text holds no
recognisable tool call or answer, :func:`repair_turn` returns ``Repair(None, None)`` and the caller decides
(re-ask, or pass the text on and let the environment score the broken format).
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from drgym import protocol

__all__ = ["Repair", "final_answer_turn", "render_answer", "render_tool_call", "repair_turn"]

_TOOL_ARG = {"web_search": "query", "browse_webpage": "url_list"}
# Names models use for the two tools (lowercase, non-letters removed), and for their arguments.
_TOOL_ALIASES = {
    "websearch": "web_search", "search": "web_search", "searchweb": "web_search", "google": "web_search",
    "googlesearch": "web_search", "bing": "web_search", "query": "web_search",
    "browsewebpage": "browse_webpage", "browse": "browse_webpage", "browsepage": "browse_webpage",
    "visit": "browse_webpage", "visitwebpage": "browse_webpage", "visitpage": "browse_webpage",
    "openurl": "browse_webpage", "open": "browse_webpage", "openpage": "browse_webpage",
    "fetch": "browse_webpage", "read": "browse_webpage", "readpage": "browse_webpage",
    "readwebpage": "browse_webpage",
}  # fmt: skip
_ARG_ALIASES = {
    "web_search": ("query", "queries", "q", "search_query", "search_queries", "keywords", "question", "text"),
    "browse_webpage": ("url_list", "urls", "url", "links", "link", "pages", "page", "urllist"),
}
_NAME_KEYS = ("name", "tool", "tool_name", "function", "action")
_ARGS_KEYS = ("arguments", "args", "parameters", "params", "input", "action_input", "tool_input")

_LOOSE_TAG = re.compile(r"<\s*(/?)\s*(think|tool[\s_-]?call|answer)\s*>", re.IGNORECASE)
_ANY_PROTOCOL_TAG = re.compile(r"</?\s*(?:think|tool_call|tool_response|answer)\s*>", re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|<>]{0,40}\|>(?:assistant|user|system)?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_REACT_CALL = re.compile(
    r"\b(web_search|websearch|search|google_search|browse_webpage|browse|visit_webpage|open_url)([(\[])",
    re.IGNORECASE,
)
_REACT_PAIR = re.compile(r"Action\s*:\s*`?([A-Za-z_]+)`?\s*\n+\s*Action\s*Input\s*:\s*(.+)", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"(?im)^[\s*#>_-]*(?:final\s+answer|answer)\s*\**\s*[:：]\s*\**\s*(.+?)\s*$")
_ACTION_START = re.compile(r"<tool_call>|<answer>|```|\{\s*\"|\bAction\s*:|\bFinal\s+Answer\s*:",
                           re.IGNORECASE)
_URL = re.compile(r"https?://[^\s<>\"'`)\]]+")
_MAX_THINK_CHARS = 8000
_MAX_ANSWER_CHARS = 500
_MAX_JSON_STARTS = 16  # bare-JSON candidates tried per reply (each try is linear in the reply's length)


@dataclass(frozen=True)
class Repair:
    """The outcome of :func:`repair_turn`.

    Attributes:
        text: A protocol turn ready for ``env.step``, or None when the output holds no usable action.
        kind: ``tool_call``, ``answer``, ``tool_error`` (well-formed tags around a call that could not be
            repaired; the environment will explain the mistake to the model) or None.
        fixes: What was changed, in words (empty when the output was valid as it came).
    """

    text: str | None
    kind: str | None
    fixes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.text is not None


def render_tool_call(name: str, arguments: dict[str, list[str]], think: str = "") -> str:
    """A tool-call turn in the protocol's exact form."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<think>\n{_clean_think(think)}\n</think>\n<tool_call>\n{call}\n</tool_call>"


def render_answer(answer: str, think: str = "") -> str:
    """An answer turn in the protocol's exact form (tags inside ``answer`` are removed)."""
    return f"<think>\n{_clean_think(think)}\n</think>\n<answer>\n{_strip_tags(answer).strip()}\n</answer>"


def repair_turn(text: str) -> Repair:
    """Repair one model turn into the protocol's format (see the module docstring).

    Valid turns come back cut after their action (as a stop string would cut them). Otherwise the first
    action in the text wins: an opened ``tool_call`` or ``answer`` block (closed or not), a JSON tool call in
    a code fence or bare, a ReAct ``Action:``/``Action Input:`` pair or ``tool(args)`` call, or a
    ``Final Answer:`` line.
    """
    if not isinstance(text, str):
        return Repair(None, None)
    fixes: list[str] = []
    cleaned = _SPECIAL.sub("", _CONTROL.sub("", text)).strip()
    if cleaned != text.strip():
        fixes.append("removed control characters or chat-template tokens")
    canonical = _LOOSE_TAG.sub(lambda m: f"<{m.group(1)}{_tag_name(m.group(2))}>", cleaned)
    if canonical != cleaned:
        fixes.append("normalised tag spelling")

    parsed = protocol.parse_turn(canonical)
    if parsed.kind in ("tool_call", "answer"):
        return Repair(protocol.truncate_after_action(canonical), parsed.kind, tuple(fixes))
    closed = _close_dangling(canonical)
    if closed is not None:
        closed_parse = protocol.parse_turn(closed)
        if closed_parse.kind in ("tool_call", "answer"):
            return Repair(closed, closed_parse.kind, (*fixes, "closed an unfinished block"))
        if closed_parse.kind == "tool_error":
            canonical, parsed = closed, closed_parse
            fixes.append("closed an unfinished block")
    return _rebuild(canonical, fixes, parsed)


def final_answer_turn(text: str, *, default: str = "unknown") -> Repair:
    """An answer turn from the model's reply when an answer is required (last turn, one-shot baselines).

    An ``answer`` in any form is used; otherwise the last line of prose outside tags and tool calls; else
    ``default``. Never returns ``Repair(None, ...)``.
    """
    repaired = repair_turn(text) if isinstance(text, str) else Repair(None, None)
    if repaired.kind == "answer" and repaired.text is not None:
        return repaired
    source = text if isinstance(text, str) else ""
    think = _think_of(source)
    prose = _FENCE.sub(" ", _ANY_PROTOCOL_TAG.split(source)[-1] if "<" in source else source)
    prose = _SPECIAL.sub("", _CONTROL.sub("", prose))
    lines = [ln.strip() for ln in prose.splitlines() if ln.strip() and not ln.strip().startswith("{")]
    if lines and len(lines[-1]) <= _MAX_ANSWER_CHARS and repaired.kind != "tool_call":
        fix = "took the last line of the reply as the answer"
        return Repair(render_answer(lines[-1], think), "answer", (fix,))
    why = "the reply was a tool call" if repaired.kind == "tool_call" else "the reply held no answer"
    return Repair(render_answer(default, think), "answer", (f"{why}; answered {default!r}",))


# ------------------------------------------------------------------------------------------- internals


def _tag_name(raw: str) -> str:
    raw = raw.lower()
    return "tool_call" if raw.startswith("tool") else raw


def _strip_tags(text: str) -> str:
    return protocol.escape_tags(_ANY_PROTOCOL_TAG.sub(" ", text))


def _clean_think(think: str) -> str:
    return _strip_tags(think).strip()[:_MAX_THINK_CHARS]


def _close_dangling(text: str) -> str | None:
    """Append the closing tag of a block left open at the end of the text (a stop string ate it)."""
    opens = list(re.finditer(r"<(tool_call|answer)>", text))
    if not opens:
        return None
    last = opens[-1]
    if f"</{last.group(1)}>" in text[last.end():]:
        return None
    prefix = text[: last.start()]
    if prefix.count("<think>") > prefix.count("</think>"):
        prefix += "\n</think>\n"
    return f"{prefix}{text[last.start():].rstrip()}\n</{last.group(1)}>"


def _think_of(text: str) -> str:
    """The reasoning of a turn: the first ``think`` block (closed or not), or the prose before any action."""
    m = re.search(r"<think>(.*?)(?:</think>|<tool_call>|<answer>|$)", text, re.DOTALL)
    if m:
        return m.group(1).strip()
    cut = _ACTION_START.search(text)
    return (text[: cut.start()] if cut else "").strip()


def _rebuild(text: str, fixes: list[str], parsed: protocol.ParsedTurn) -> Repair:
    think = _think_of(text)
    found = (_block_action(text), _json_action(text), _react_action(text), _answer_line(text))
    candidates = [c for c in found if c is not None]
    if not candidates:
        return Repair(None, None, tuple(fixes))
    _, kind, value, how = min(candidates, key=lambda c: c[0])
    if kind == "answer":
        return Repair(render_answer(value, think), "answer", (*fixes, how))
    if kind == "tool_call":
        name, arguments = value
        return Repair(render_tool_call(name, arguments, think), "tool_call", (*fixes, how))
    # An unrepairable call between proper tags: pass it on, the environment tells the model what is wrong.
    if parsed.format_ok and parsed.kind == "tool_error":
        return Repair(protocol.truncate_after_action(text), "tool_error", tuple(fixes))
    payload = _strip_tags(str(value)).strip()[:_MAX_THINK_CHARS]
    turn = f"<think>\n{_clean_think(think)}\n</think>\n<tool_call>\n{payload}\n</tool_call>"
    return Repair(turn, "tool_error", (*fixes, "closed an unfinished tool call that could not be repaired"))


_Candidate = tuple[int, str, Any, str]


def _block_action(text: str) -> _Candidate | None:
    m = re.search(r"<(tool_call|answer)>", text)
    if m is None:
        return None
    end = re.compile(r"</?(?:tool_call|answer|think|tool_response)>")
    stop = end.search(text, m.end())
    body = text[m.end(): stop.start() if stop else len(text)]
    if m.group(1) == "answer":
        return m.start(), "answer", body.strip(), "rebuilt the answer block"
    call = _call_from_text(body)
    if call is not None:
        return m.start(), "tool_call", call, "repaired the tool call"
    return m.start(), "broken_call", body, ""


def _json_action(text: str) -> _Candidate | None:
    for fence in _FENCE.finditer(text):
        call = _call_from_text(fence.group(1))
        if call is not None:
            return fence.start(), "tool_call", call, "took the tool call from a code block"
    for n, m in enumerate(re.finditer(r"\{", text)):
        if n >= _MAX_JSON_STARTS:
            break
        value = _loads(text[m.start():])
        call = _normalise_call(value)
        if call is not None:
            return m.start(), "tool_call", call, "wrapped a bare JSON tool call in tags"
    return None


def _react_action(text: str) -> _Candidate | None:
    found: list[_Candidate] = []
    pair = _REACT_PAIR.search(text)
    if pair is not None:
        call = _call_from_args(pair.group(1), pair.group(2).strip())
        if call is not None:
            found.append((pair.start(), "tool_call", call, "converted a ReAct Action/Action Input pair"))
    for m in _REACT_CALL.finditer(text):
        close = ")" if m.group(2) == "(" else "]"
        inner = _balanced(text, m.end() - 1, m.group(2), close)
        call = _call_from_args(m.group(1), inner) if inner is not None else None
        if call is not None:
            found.append((m.start(), "tool_call", call, "converted a function-style tool call"))
            break
    return min(found, key=lambda c: c[0]) if found else None


def _answer_line(text: str) -> _Candidate | None:
    m = _ANSWER_LINE.search(text)
    if m is None or not m.group(1).strip("*_ "):
        return None
    return m.start(), "answer", m.group(1).strip("*_ "), "converted a 'Final Answer:' line"


def _balanced(text: str, start: int, open_: str, close: str) -> str | None:
    """The text between the bracket at ``start`` and its match (quotes respected), or up to the line end."""
    depth, quote, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return text[start + 1: i]
        i += 1
    line_end = text.find("\n", start)
    return text[start + 1: line_end if line_end >= 0 else len(text)] or None


def _call_from_text(body: str) -> tuple[str, dict[str, list[str]]] | None:
    fenced = _FENCE.search(body)
    if fenced is not None:
        body = fenced.group(1)
    brace = body.find("{")
    if brace < 0:
        return None
    return _normalise_call(_loads(body[brace:]))


def _call_from_args(tool: str, args: str) -> tuple[str, dict[str, list[str]]] | None:
    name = _tool_name(tool)
    if name is None:
        return None
    value = _literal_args(args)
    if isinstance(value, dict):
        call = _normalise_call({"name": name, "arguments": value}) or _normalise_call(value)
        return call
    return _normalise_call({"name": name, "arguments": value})


def _literal_args(args: str) -> Any:
    """Python-style call arguments (``"a", "b"``, ``query=["a"]``, ``{"query": …}``) as a value, else text."""
    args = args.strip()
    if args.startswith("{"):
        value = _loads(args)
        if value is not None:
            return value
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        assert isinstance(call, ast.Call)
        if call.keywords and not call.args:
            return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
        values = [ast.literal_eval(a) for a in call.args]
        if len(values) == 1:
            return values[0]
        return values
    except (SyntaxError, ValueError, TypeError, AssertionError, RecursionError, MemoryError):
        return args.strip().strip("\"'`").strip()


def _tool_name(raw: Any) -> str | None:
    if isinstance(raw, dict):  # OpenAI's {"function": {"name": ...}}
        raw = raw.get("name")
    if not isinstance(raw, str):
        return None
    key = re.sub(r"[^a-z]", "", raw.lower())
    if key in _TOOL_ALIASES:
        return _TOOL_ALIASES[key]
    close = difflib.get_close_matches(raw.strip().lower(), list(_TOOL_ARG), n=1, cutoff=0.75)
    return close[0] if close else None


def _normalise_call(value: Any) -> tuple[str, dict[str, list[str]]] | None:
    """``(tool, {arg: [strings]})`` from a decoded JSON call in any of the usual shapes, else None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI tool_calls item
        value = {**value["function"], **{k: v for k, v in value.items() if k != "function"}}
    name = next((_tool_name(value[k]) for k in _NAME_KEYS if k in value and _tool_name(value[k])), None)
    if name is None:
        return None
    args: Any = next((value[k] for k in _ARGS_KEYS if k in value), None)
    if isinstance(args, str):
        decoded = _loads(args) if args.strip().startswith("{") else None
        args = decoded if isinstance(decoded, dict) else args
    if args is None:
        args = {k: v for k, v in value.items() if k not in _NAME_KEYS}
    items = _argument_items(name, args)
    return (name, {_TOOL_ARG[name]: items}) if items else None


def _argument_items(name: str, args: Any) -> list[str]:
    if isinstance(args, dict):
        lowered = {str(k).lower(): v for k, v in args.items()}
        args = next((lowered[k] for k in _ARG_ALIASES[name] if k in lowered), None)
        if args is None and len(lowered) == 1:
            args = next(iter(lowered.values()))
    if isinstance(args, str):
        args = [args]
    if isinstance(args, tuple):
        args = list(args)
    if not isinstance(args, list):
        return []
    items = [" ".join(_CONTROL.sub("", a).split()) for a in args if isinstance(a, str)]
    items = [a for a in items if a]
    if name == "browse_webpage":
        urls = [u for a in items for u in _URL.findall(a)] or items
        items = [u.rstrip(".,;") for u in urls]
    return list(dict.fromkeys(items))


def _loads(text: str) -> Any:
    """Decode the JSON value at the start of ``text``, forgiving the usual slips; None when it cannot."""
    text = text.strip()
    if not text:
        return None
    text = text.translate({0x201C: '"', 0x201D: '"', 0x2018: "'", 0x2019: "'"})
    decoder = json.JSONDecoder(strict=False)
    attempts = [text, re.sub(r",\s*([}\]])", r"\1", text)]
    attempts.append(_close_brackets(attempts[-1]))
    for attempt in attempts:
        try:
            return decoder.raw_decode(attempt)[0]
        except (json.JSONDecodeError, RecursionError):
            continue
    span = _balanced(text, 0, "{", "}") if text.startswith("{") else None
    if span is not None:
        try:  # Python literal syntax: single quotes, True/None
            return ast.literal_eval("{" + span + "}")
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
            return None
    return None


def _close_brackets(text: str) -> str:
    """Finish JSON cut off mid-way (a length limit hit): close an open string, then open brackets."""
    stack: list[str] = []
    in_string, escaped = False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
            if not stack:
                return text
    tail = '"' if in_string else ""
    body = (text + tail).rstrip().rstrip(",:")
    return body + "".join(reversed(stack))
