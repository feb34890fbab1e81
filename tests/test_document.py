"""``Document`` lives in ``drgym.document``; the old import path still names the same class."""

from __future__ import annotations


def test_document_is_importable_from_its_old_home() -> None:
    from drgym.document import Document
    from drgym.search import Document as FromSearch
    from drgym.search.base import Document as FromBase

    assert FromBase is Document and FromSearch is Document
