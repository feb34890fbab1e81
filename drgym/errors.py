"""Typed errors of drgym.

Two families matter to the environment: *agent mistakes* (bad turns) become teaching observations and never
raise; *infrastructure failures* (network, backend, data) raise one of the ``DrgymError`` subclasses below,
which the environment turns into an error observation and counts in ``info``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BlockedURLError",
    "BudgetExceededError",
    "ChecksumError",
    "ConfigError",
    "DataError",
    "DependencyNotInstalled",
    "DownloadError",
    "DrgymError",
    "FetchError",
    "IndexCorruptError",
    "LLMError",
    "RateLimitedError",
    "ReplayMissError",
    "ToolError",
    "UnsupportedContentError",
]


class DrgymError(Exception):
    """Base class of every error drgym raises on purpose."""


class ConfigError(DrgymError, ValueError):
    """A bad option or configuration value; the message names the option and the valid values."""


class DataError(DrgymError):
    """A dataset or corpus could not be found, read or parsed."""


class ChecksumError(DataError):
    """A downloaded file's sha256 differs from the registry's; nothing was written to the cache."""


class DownloadError(DataError):
    """A download failed or was truncated; nothing was written to the cache."""


class IndexCorruptError(DataError):
    """An on-disk search index is unreadable; the message says how to rebuild it."""


class ToolError(DrgymError):
    """A tool could not complete; the environment shows the message to the policy as the observation."""


class BackendError(ToolError):
    """A search backend failed after its retries (HTTP error, timeout, bad JSON)."""


class RateLimitedError(BackendError):
    """The provider kept answering 429 past the retry budget."""


class BudgetExceededError(ToolError):
    """The per-episode or global budget of search calls is spent."""


class ReplayMissError(ToolError):
    """Replay-only mode met a request that was never recorded."""


class FetchError(ToolError):
    """A page could not be fetched (network fault, timeout, HTTP error, too large)."""


class BlockedURLError(FetchError):
    """The SSRF guard (or robots.txt) refused a URL; the message says why."""


class UnsupportedContentError(FetchError):
    """The page's content type cannot be read (image, binary, PDF without the extra)."""


class LLMError(DrgymError):
    """A chat model backend failed after its retries, or returned nothing usable."""


class DependencyNotInstalled(DrgymError, ImportError):
    """An optional library is missing; the message names the extra to install."""


def missing_dependency(package: str, extra: str) -> DependencyNotInstalled:
    """Build the standard error for an optional import that failed."""
    return DependencyNotInstalled(f'{package} is not installed, run pip install "drgym[{extra}]"')
