"""Text extraction from PDF bytes with pypdf (the ``[pdf]`` extra), off the event loop.

PDF parsing is CPU-bound and pypdf is pure Python, so extraction runs in a worker thread and stops after
``max_pages`` pages and ``max_chars`` characters: a 2,000-page report must not stall an episode.
"""

from __future__ import annotations

import asyncio
import io
import logging

from drgym.errors import UnsupportedContentError, missing_dependency

__all__ = ["extract_pdf_text", "extract_pdf_text_sync", "pdf_available", "require_pypdf"]

logger = logging.getLogger(__name__)


def pdf_available() -> bool:
    """Whether pypdf can be imported."""
    try:
        import pypdf  # noqa: F401
    except ImportError:
        return False
    return True


def require_pypdf() -> None:
    """Raise :class:`UnsupportedContentError` naming the extra when pypdf is missing."""
    if not pdf_available():
        raise UnsupportedContentError(f"cannot read PDF: {missing_dependency('pypdf', 'pdf')}")


def extract_pdf_text_sync(data: bytes, *, max_pages: int = 50, max_chars: int = 2_000_000) -> str:
    """Extract the text of the first ``max_pages`` pages (blocking; see :func:`extract_pdf_text`).

    Raises:
        UnsupportedContentError: pypdf is missing, or the PDF is encrypted, corrupt or truncated.
    """
    require_pypdf()
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnsupportedContentError("cannot read PDF: it is encrypted with a password")
        parts: list[str] = []
        total = 0
        for index, page in enumerate(reader.pages):
            if index >= max_pages or total >= max_chars:
                break
            try:
                text = page.extract_text() or ""
            except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.debug("skipping unreadable PDF page %d: %s", index, exc)
                continue
            parts.append(text)
            total += len(text)
    except UnsupportedContentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise UnsupportedContentError(f"cannot read PDF: {type(exc).__name__}: {exc}") from exc
    return "\n\n".join(p.strip() for p in parts if p.strip())[:max_chars]


async def extract_pdf_text(data: bytes, *, max_pages: int = 50, max_chars: int = 2_000_000) -> str:
    """Extract a PDF's text in a worker thread so the event loop keeps serving other episodes."""
    return await asyncio.to_thread(extract_pdf_text_sync, data, max_pages=max_pages, max_chars=max_chars)
