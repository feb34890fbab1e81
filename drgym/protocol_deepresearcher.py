"""``protocol="deepresearcher"``: the text interface of the original DeepResearcher code, so its policy runs unchanged.

A policy trained with the original (e.g. ``GAIR/DeepResearcher-7b``) saw, turn after turn:

- a system turn holding the original's prompt followed by Qwen2.5's standard tools block for the original's two
  tool schemas (what ``apply_chat_template(messages, tools=TOOLS)`` renders);
- an assistant turn opened by a forced ``<think>`` (the original appended it to every generation prompt);
- tool results as the JSON text of Python lists (``json.dumps`` defaults: ASCII-escaped):
  ``[{"search_query": q, "web_page_info_list": [{"title", "url", "quick_summary"}, ...]}, ...]`` after a
  search, ``[{"url": u, "information": [{"page_number": n, "page_summary": s}, ...]}, ...]`` after a read,
  and ``[]`` when a tool failed;
- browsing of the URLs of the last search only; a malformed tool call ended the episode (scored −1).

:class:`DeepResearcherMode` is what :class:`~drgym.env.WebResearchEnv` consults when built with
``protocol="deepresearcher"``; the default ``protocol="drgym"`` does not use this module. Tags are still
neutralised in web text, and the reward still reads the policy's own turns only (see the README's list of
deviations).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from drgym.protocol import ParsedTurn, escape_tags, parse_turn

if TYPE_CHECKING:
    from drgym.search.base import Result

__all__ = [
    "GENERATION_PREFIX",
    "PROTOCOLS",
    "DeepResearcherMode",
    "make_mode",
    "original_system_prompt",
    "qwen25_tools_block",
    "tool_schemas",
]

PROTOCOLS = ("drgym", "deepresearcher")
"""Values of the env's ``protocol`` option."""

GENERATION_PREFIX = "<think>"
"""Text the original put at the start of every assistant turn, before the policy generated."""

# The first line ends in a space in the original; kept out of the source text so no editor strips it.
_PROMPT = "## Background information " + """
* Today is {today}
* You are Deep AI Research Assistant

The question I give you is a complex question that requires a *deep research* to answer.

I will provide you with two tools to help you answer the question:
* A web search tool to help you perform google search.
* A webpage browsing tool to help you get new page content.

You don't have to answer the question now, but you should first think about the research plan or what to search next.

Your output format should be one of the following two formats:

<think>
YOUR THINKING PROCESS
</think>
<answer>
YOUR ANSWER AFTER GETTING ENOUGH INFORMATION
</answer>

or

<think>
YOUR THINKING PROCESS
</think>
<tool_call>
YOUR TOOL CALL WITH CORRECT FORMAT
</tool_call>

You should always follow the above two formats strictly.
Only output the final answer (in words, numbers or phrase) inside the <answer></answer> tag, without any \
explanations or extra information. If this is a yes-or-no question, you should only answer yes or no.
"""

# Qwen2.5's chat template writes this around the tool schemas when it is given ``tools=`` (verbatim).
_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


def tool_schemas() -> list[dict[str, Any]]:
    """The original's two tool schemas, key order included (a fresh copy on every call)."""
    return [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "description": (
                    "Search the web for relevant information from google. You should use this tool if the "
                    "historical page content is not enough to answer the question. Or last search result is "
                    "not relevant to the question."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "description": "The query to search, which helps answer the question",
                            },
                            "description": "The queries to search",
                        }
                    },
                    "required": ["query"],
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "browse_webpage",
                "description": (
                    "Browse the webpage and return the content that not appeared in the conversation history. "
                    "You should use this tool if the last action is search and the search result maybe "
                    "relevant to the question."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "url_list": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "description": (
                                    "The chosen url from the search result, do not use url that not appeared "
                                    "in the search result"
                                ),
                            },
                            "description": "The chosen urls from the search result.",
                        }
                    },
                    "required": ["url_list"],
                },
            },
        },
    ]


def _iso_date(today: _dt.date | str | None) -> str:
    if today is None:
        return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")  # the original used gmtime()
    if isinstance(today, _dt.datetime):
        return today.date().isoformat()
    if isinstance(today, _dt.date):
        return today.isoformat()
    return str(today).strip()


def original_system_prompt(today: _dt.date | str | None = None) -> str:
    """The original's system prompt (without the tools block); the date as ``YYYY-MM-DD`` (UTC by default)."""
    return _PROMPT.format(today=_iso_date(today))


def qwen25_tools_block(tools: Sequence[Mapping[str, Any]]) -> str:
    """What Qwen2.5's chat template appends to the system turn when given ``tools=`` (``tojson`` per tool:
    ``json.dumps`` with non-ASCII kept, one per line)."""
    return _TOOLS_HEAD + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools) + _TOOLS_TAIL


def _field(value: Any) -> str:
    """A web text field: tags neutralised, so a page cannot write ``</tool_response>`` into the context."""
    return escape_tags(value if isinstance(value, str) else str(value or ""))


class DeepResearcherMode:
    """The pieces of the original's interface the env uses under ``protocol="deepresearcher"``."""

    name = "deepresearcher"
    generation_prefix = GENERATION_PREFIX
    browse_last_search_only = True

    def system_prompt(self, today: _dt.date | str | None) -> str:
        """The system turn's content: the original's prompt and Qwen2.5's tools block, so that applying the
        chat template *without* ``tools=`` renders exactly what the original rendered with them."""
        return original_system_prompt(today) + qwen25_tools_block(tool_schemas())

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The original's tool schemas (already inside :meth:`system_prompt`: do not pass them again)."""
        return tool_schemas()

    def prepare_action(self, action: str) -> str:
        """The turn as the conversation holds it: the forced ``<think>`` put back when the caller passed only
        what the policy generated after it."""
        return action if action.lstrip().startswith(GENERATION_PREFIX) else GENERATION_PREFIX + action

    def parse_turn(self, text: str, *, max_chars: int) -> ParsedTurn:
        """drgym's parser, with a malformed tool call made a format error: the original ended the episode."""
        parsed = parse_turn(text, max_chars=max_chars)
        if parsed.kind != "tool_error":
            return parsed
        return replace(parsed, format_ok=False, error_kind="bad_tool_call")

    def search_observation(self, per_query: Sequence[tuple[str, Sequence[Result]]]) -> str:
        """Search results as the original rendered them (queries that failed are left out, as it did)."""
        content = [
            {
                "search_query": query,
                "web_page_info_list": [
                    {
                        "title": _field(getattr(r, "title", "")),
                        "url": _field(getattr(r, "url", "")),
                        "quick_summary": _field(getattr(r, "snippet", "")),
                    }
                    for r in results
                ],
            }
            for query, results in per_query
        ]
        return json.dumps(content)

    def browse_observation(self, pages: Sequence[Mapping[str, Any]]) -> str:
        """Page notes as the original rendered them: per URL, the new information (empty when none)."""
        content = []
        for page in pages:
            notes = "" if page.get("error") else str(page.get("notes") or "").strip()
            information = [{"page_number": 0, "page_summary": _field(notes)}] if notes else []
            content.append({"url": _field(page.get("url") or ""), "information": information})
        return json.dumps(content)

    def render_error(self, message: str) -> str:
        """The original's tool failure: an empty result list (the reason is not shown to the policy)."""
        return "[]"


def make_mode(protocol: str) -> DeepResearcherMode | None:
    """The mode object of a ``protocol`` value (None for drgym's own protocol); the value is checked by the env."""
    return DeepResearcherMode() if protocol == "deepresearcher" else None
