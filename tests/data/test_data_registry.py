"""The registry against the data README, the real files, and the public listing API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drgym import data
from drgym.data import corpus, loaders
from drgym.data.registry import FILES, SPECS, VITAL_ARTICLES
from drgym.errors import ConfigError

_ROW = re.compile(r"^\| (\S+) \| (\S+) \| ([0-9a-f]{40}) \| (\S+) \|.*\| ([0-9a-f]{64}) \|$")


def test_every_readme_file_is_registered_with_its_address_and_checksum(data_mirror: Path):
    readme = (data_mirror / "README.md").read_text()
    rows = [m.groups() for m in map(_ROW.match, readme.splitlines()) if m]
    assert len(rows) == 19
    for relpath, repo, commit, path, sha in rows:
        entry = FILES[relpath]
        assert (entry.repo, entry.commit, entry.path, entry.sha256) == (repo, commit, path, sha)
        assert entry.url == f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"
    assert FILES[VITAL_ARTICLES].sha256 in readme
    assert set(FILES) == {r[0] for r in rows} | {VITAL_ARTICLES}


def test_every_mirrored_file_verifies(data_mirror: Path):
    for relpath in FILES:
        assert data.fetch(relpath) == data_mirror / relpath


def test_every_spec_is_readable():
    for spec in SPECS.values():
        assert set(spec.files) <= set(FILES), spec.name
        if "dataset" in spec.kinds and spec.name != "demo":
            assert spec.name in loaders._PARSERS
        if "corpus" in spec.kinds:
            assert all(relpath in corpus._PARSERS for relpath in spec.files)


def test_listings():
    datasets = data.list_datasets()
    assert datasets == sorted(datasets)
    expected = {
        "deepresearcher-test",
        "deepresearcher-dev",
        "bamboogle",
        "hotpotqa-dev500",
        "musique-dev100",
        "popqa-1000",
        "hotpotqa-train100",
        "musique-train100",
        "nq-open",
        "hotpotqa-dev",
        "2wiki-dev",
        "musique-dev",
        "triviaqa-3000",
        "bamboogle-searchr1",
        "demo",
    }
    assert set(datasets) == expected
    assert data.list_corpora() == ["demo", "wiki-local"]


def test_dataset_info_is_enough_for_a_table(monkeypatch):
    monkeypatch.delenv("DRGYM_DATA_MIRROR", raising=False)
    info = data.dataset_info("deepresearcher-test")
    assert info["kinds"] == ["dataset"] and info["size"] == "3197 questions"
    assert info["bytes"] == 611936 and info["available"] is False
    assert info["files"][0]["url"].startswith("https://raw.githubusercontent.com/GAIR-NLP/DeepResearcher/")
    assert "Apache-2.0" in info["licence"] and info["description"]
    wiki = data.dataset_info("wiki-local")
    assert len(wiki["files"]) == 11 and wiki["kinds"] == ["corpus"]
    assert data.dataset_info("demo")["available"] is True


def test_dataset_info_sees_the_mirror(data_mirror: Path):
    assert data.dataset_info("wiki-local")["available"] is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: data.load_dataset("deepresearcher-tset"),
            (
                r"unknown dataset 'deepresearcher-tset'; valid: .*"
                r"Did you mean 'deepresearcher-test'\?"
            ),
        ),
        (
            lambda: data.load_dataset("wiki-local"),
            r"unknown dataset 'wiki-local'; valid: 2wiki-dev, bamboogle",
        ),
        (
            lambda: data.load_corpus("wiki_local"),
            (
                r"unknown corpus 'wiki_local'; valid: demo, wiki-local\. "
                r"Did you mean 'wiki-local'\?"
            ),
        ),
        (lambda: data.dataset_info("popqa"), r"Did you mean 'popqa-1000'\?"),
        (lambda: data.download("nope"), r"unknown dataset or corpus 'nope'; valid: "),
        (
            lambda: data.load_dataset("demo", limit=-1),
            r"limit must be a non-negative integer or None, got -1",
        ),
        (
            lambda: data.load_dataset("demo", data_source="nq"),
            (
                r"unknown data_source for dataset 'demo' 'nq'; "
                r"valid: demo"
            ),
        ),
    ],
)
def test_bad_names_are_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_download_of_demo_needs_nothing(monkeypatch):
    monkeypatch.delenv("DRGYM_DATA_MIRROR", raising=False)
    paths = data.download("demo")
    assert [p.name for p in paths] == ["corpus.jsonl", "questions.jsonl"] and all(p.is_file() for p in paths)


def test_download_fetches_every_file(data_mirror: Path):
    assert data.download("wiki-local") == [data_mirror / r for r in SPECS["wiki-local"].files]
