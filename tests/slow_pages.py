"""A page that stays slow to parse within the extractor's input bounds (tests of isolation and time limits).

``drgym.web.extract`` cuts a page to 4 MiB and every start tag to its first 256 attributes before parsing, so a
single element with 40,000 attributes is no longer slow. libxml2's cost is still quadratic in the attributes of
each element, so the slowest page the bounds let through is as many 256-attribute elements as fit in 4 MiB:
seconds of CPU, which is what these tests need.
"""

from __future__ import annotations

__all__ = ["slow_to_parse"]


def slow_to_parse(seed: str = "x") -> str:
    """About 4 MiB of ``<p a0 a1 … a255>`` elements (several seconds of extraction on one core)."""
    attributes = " ".join(f"a{i}" for i in range(256))
    element = f"<p {attributes}>{seed}</p>"
    return "<html><body>" + element * ((4 * 1024 * 1024) // len(element) - 1) + "</body></html>"
