"""The web layer: safe fetching (SSRF guard, caps, rate limits), HTML → markdown extraction, segmenting."""

from drgym.web.extract import extract
from drgym.web.fetch import FetchConfig, Fetcher, HTTPStatusError, Page
from drgym.web.opener import PageOpener
from drgym.web.segment import segment_text, segment_tokens
from drgym.web.ssrf import SSRFGuard

__all__ = [
    "FetchConfig",
    "Fetcher",
    "HTTPStatusError",
    "Page",
    "PageOpener",
    "SSRFGuard",
    "extract",
    "segment_text",
    "segment_tokens",
]
