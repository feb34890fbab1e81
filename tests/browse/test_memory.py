from __future__ import annotations

import pytest

from drgym.browse import EpisodeMemory
from drgym.errors import ConfigError


def test_notes_kept_per_url_in_order():
    memory = EpisodeMemory(max_chars=1000)
    memory.add("https://a", "Paris is the capital.")
    memory.add("https://b", "Lyon has 500,000 people.")
    memory.add("https://a", "Founded in the 3rd century BC.")
    memory.add("https://c", "   ")  # blank notes are not stored
    assert memory.urls() == ["https://a", "https://b"]
    assert memory.notes_for("https://a") == "Paris is the capital.\nFounded in the 3rd century BC."
    assert memory.num_pieces == 3
    rendered = memory.render()
    assert rendered.index("[https://a]") < rendered.index("[https://b]")
    assert "Founded in the 3rd century BC." in rendered.split("[https://b]")[0]


def test_memory_is_bounded_and_drops_oldest_first():
    memory = EpisodeMemory(max_chars=100)
    for i in range(50):
        memory.add(f"https://site/{i}", f"fact number {i:02d} ")
    assert memory.total_chars <= 100
    assert memory.notes_for("https://site/49") == "fact number 49"
    assert memory.notes_for("https://site/0") == ""
    assert memory.urls()[-1] == "https://site/49"
    assert sum(len(memory.notes_for(u)) for u in memory.urls()) == memory.total_chars


def test_one_piece_larger_than_budget_keeps_its_end():
    memory = EpisodeMemory(max_chars=10)
    memory.add("https://a", "old")
    memory.add("https://b", "0123456789ABCDEF")
    assert memory.total_chars == 10
    assert memory.urls() == ["https://b"]
    assert memory.notes_for("https://b") == "6789ABCDEF"


def test_mark_selects_what_came_after():
    memory = EpisodeMemory()
    memory.add("https://a", "first visit")
    mark = memory.mark()
    memory.add("https://a", "second visit")
    assert memory.notes_for("https://a", since=mark) == "second visit"
    empty = EpisodeMemory()
    assert empty.mark() == 0
    empty.add("https://a", "x")
    assert empty.mark() == 1


def test_render_budget_keeps_most_recent():
    memory = EpisodeMemory(max_chars=10_000)
    memory.add("https://old", "o" * 500)
    memory.add("https://new", "n" * 100)
    rendered = memory.render(max_chars=300)
    assert "https://new" in rendered and "https://old" not in rendered
    assert len(rendered) <= 300
    tail_only = memory.render(max_chars=60)
    assert tail_only.startswith("[https://new]") and len(tail_only) <= 60


def test_clear_forgets_everything():
    memory = EpisodeMemory()
    memory.add("https://a", "x" * 50)
    memory.clear()
    assert memory.num_pieces == 0 and memory.total_chars == 0
    assert memory.render() == "" and memory.urls() == []


def test_bad_size_is_a_config_error():
    with pytest.raises(ConfigError, match="max_chars must be at least 1, got 0"):
        EpisodeMemory(max_chars=0)
