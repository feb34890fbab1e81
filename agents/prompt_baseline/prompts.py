"""The prompt baseline's own text: a worked example, the last-turn instruction and the format reminder.

The system prompt itself is the environment's (``info["system_prompt"]``): the baseline sees exactly what a
trained policy sees, plus, optionally, the example below.
"""

from __future__ import annotations

__all__ = ["ELIDED_OBSERVATION", "FEW_SHOT_EXAMPLE", "FINAL_ANSWER_INSTRUCTION", "FORMAT_REMINDER"]

FEW_SHOT_EXAMPLE = """# Example

This example only shows the format; its question is not the one you will be given.

Question: In which city was the author of the novel "The Little Prince" born?

Reply 1:
<think>
Two facts are needed: who wrote The Little Prince, and where that person was born. I will search for both.
</think>
<tool_call>
{"name": "web_search", "arguments": {"query": ["The Little Prince author", "author of The Little Prince \
birthplace"]}}
</tool_call>

Tool response 1 (within <tool_response></tool_response> tags):
Results for query "The Little Prince author":
1. The Little Prince - Wikipedia
   URL: https://en.wikipedia.org/wiki/The_Little_Prince
   The Little Prince is a novella written and illustrated by the French aviator Antoine de Saint-Exupéry, \
first published in 1943.
...

Reply 2:
<think>
The author is Antoine de Saint-Exupéry. His page should state where he was born; I will read it.
</think>
<tool_call>
{"name": "browse_webpage", "arguments": {"url_list": ["https://en.wikipedia.org/wiki/Antoine_de_Saint-Exup%C3%A9ry"]}}
</tool_call>

Tool response 2 (within <tool_response></tool_response> tags):
Page 1: Antoine de Saint-Exupéry - Wikipedia
URL: https://en.wikipedia.org/wiki/Antoine_de_Saint-Exup%C3%A9ry
Antoine de Saint-Exupéry was born in Lyon, France, on 29 June 1900.

Reply 3:
<think>
The Little Prince was written by Antoine de Saint-Exupéry, who was born in Lyon.
</think>
<answer>
Lyon
</answer>"""
"""Appended to the system prompt when ``few_shot=True``."""

FINAL_ANSWER_INSTRUCTION = (
    "This is your last reply: no more tool calls can be made. Using the information gathered so far, give "
    "your final answer now, in the form <think>...</think><answer>...</answer>. Keep the answer short: just "
    "the entity, date, number or phrase asked for."
)
"""Added as a user turn on the last allowed turn, so the episode ends with an answer, not a truncation."""

FORMAT_REMINDER = (
    "Your last reply did not follow the required format, so it was not used. Reply again with exactly one "
    'of:\n<think>...</think><tool_call>{"name": "web_search", "arguments": {"query": ["..."]}}</tool_call>\n'
    '<think>...</think><tool_call>{"name": "browse_webpage", "arguments": {"url_list": ["..."]}}'
    "</tool_call>\n<think>...</think><answer>...</answer>"
)
"""Added after an unusable reply when the agent asks the model once more."""

ELIDED_OBSERVATION = "[This earlier tool result was removed to fit the model's context window.]"
"""Replaces old tool results once the conversation no longer fits the model."""
