"""Page reading for the ``browse_webpage`` tool: the paper's browsing agent, a lexical reader, the browser.

Importing this package loads no model library; the browsing agent talks to any :class:`drgym.llm.ChatClient`.
"""

from __future__ import annotations

from drgym.browse.agent import BrowsingAgent
from drgym.browse.base import PageNotes, Reader
from drgym.browse.browser import Browser
from drgym.browse.lexical import LexicalReader
from drgym.browse.memory import EpisodeMemory

__all__ = ["Browser", "BrowsingAgent", "EpisodeMemory", "LexicalReader", "PageNotes", "Reader"]
