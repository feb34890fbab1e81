"""make_client specs, lazy imports, and loading a saved checkpoint by path."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from drgym.errors import ConfigError, DependencyNotInstalled
from drgym.llm import SPECS, make_client
from drgym.llm.openai import OpenAIChatClient

REPO = Path(__file__).resolve().parents[2]
CHAT = [{"role": "user", "content": "Who wrote Hamlet?"}]


def test_import_does_not_load_model_libraries() -> None:
    code = ("import sys, drgym.llm, drgym.llm.factory, drgym.llm.local, drgym.llm.server, drgym.llm.openai; "
            "bad = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_openai_spec() -> None:
    client = make_client("openai:http://127.0.0.1:8000/v1", model="qwen", max_concurrency=4, temperature=0.6)
    assert isinstance(client, OpenAIChatClient)
    assert (client.base_url, client.model, client.max_concurrency) == ("http://127.0.0.1:8000/v1", "qwen", 4)
    assert client.default_sampling == {"temperature": 0.6}
    with pytest.raises(ConfigError, match="base_url must be an http"):
        make_client("openai:localhost:8000")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt4", r"unknown LLM spec 'gpt4'; valid: openai:URL, hf:PATH_OR_NAME, vllm:NAME, tiny$"),
        ("http://localhost:8000/v1", r"Did you mean: 'openai:http://localhost:8000/v1'\?"),
        ("opneai:http://x/v1", r"Did you mean: 'openai'\?"),
        ("tiny:x", "unknown LLM spec 'tiny:x'"),
        ("hf:", r"names no model; write hf:PATH_OR_NAME"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_client(spec)
    assert len(SPECS) == 4


def test_conflicting_model_names() -> None:
    with pytest.raises(ConfigError, match="name different models"):
        make_client("hf:a/b", model="c/d")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_spec_without_vllm_names_the_extra() -> None:
    with pytest.raises(DependencyNotInstalled, match=r'vllm is not installed, run pip install "drgym\[vllm\]"'):
        make_client("vllm:Qwen/Qwen2.5-7B-Instruct")


async def test_tiny_spec_and_saved_checkpoint_by_path(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    tiny = make_client("tiny", tiny_config={"num_hidden_layers": 1}, max_new_tokens=6)
    assert tiny.model.config.num_hidden_layers == 1
    expected = await tiny.complete(CHAT, seed=4)

    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = make_client(f"hf:{tmp_path}", device="cpu", max_new_tokens=6)
    assert type(loaded.tokenizer).__name__ == "ByT5Tokenizer"
    assert loaded.encode(CHAT) == tiny.encode(CHAT)
    again = await loaded.complete(CHAT, seed=4)
    assert again.token_ids == expected.token_ids


def test_missing_model_path_is_a_config_error() -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="cannot load model '/nonexistent/model'"):
        make_client("hf:/nonexistent/model")
