"""The deepresearcher agent against a loopback OpenAI-compatible server that renders prompts as vLLM does
(the model's chat template, ``continue_final_message``): the prompt it sees is the original's, unchanged."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from aiohttp import web

from drgym.agent import make_agent
from drgym.agents.deepresearcher import DeepResearcherAgent
from drgym.env import WebResearchEnv
from drgym.errors import ConfigError
from drgym.protocol_deepresearcher import original_system_prompt, tool_schemas

TODAY = "2025-03-04"
TURNS = [
    (
        'I will search.\n</think>\n<tool_call>\n{"name": "web_search", "arguments": {"query": ["tidal clock"]}}\n'
        "</tool_call>"
    ),
    "Found it.\n</think>\n<answer>Ilse Varrow</answer>",
]


@pytest.fixture(scope="module")
def qwen_tokenizer():
    trl = pytest.importorskip("trl")
    from drgym.llm.tiny_tokenizer import word_tokenizer

    tokenizer = word_tokenizer(["tidal clock"])
    tokenizer.chat_template = resources.files(trl).joinpath("chat_templates/qwen2_5.jinja").read_text()
    return tokenizer


def _server(tokenizer, prompts: list[str]) -> web.Application:
    replies = list(TURNS)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        prompts.append(
            tokenizer.apply_chat_template(body["messages"], tokenize=False, continue_final_message=True)
        )
        text = replies.pop(0)
        return web.json_response({
            "id": "x", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        })

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_plays_an_episode_with_the_originals_prompt(serve, qwen_tokenizer):
    prompts: list[str] = []
    url = await serve(_server(qwen_tokenizer, prompts))
    agent = make_agent("deepresearcher", llm=f"openai:{url}", model="GAIR/DeepResearcher-7b")
    assert isinstance(agent, DeepResearcherAgent)
    env = WebResearchEnv("demo", today=TODAY, results_per_query=3, **agent.env_options)
    obs, info = await env.areset(options={"index": 0})
    agent.reset(obs, info)
    reward, done = 0.0, False
    while not done:
        action = await agent.aact(obs, info)
        obs, reward, terminated, truncated, info = await env.astep(action)
        done = terminated or truncated
    await agent.aclose()
    assert reward == 1.0 and agent.last_usage == {"completion_tokens": 5, "prompt_tokens": 10}

    original = [
        {"role": "system", "content": original_system_prompt(TODAY)},
        {"role": "user", "content": env.records[0].question},
    ]
    first = qwen_tokenizer.apply_chat_template(original, tools=tool_schemas(), tokenize=False,
                                               add_generation_prompt=True) + "<think>"
    assert prompts[0] == first  # the original's rendering with tools=TOOLS, then the forced <think>
    tool = info["messages"][3]
    assert tool["role"] == "tool" and json.loads(tool["content"])[0]["search_query"] == "tidal clock"
    assert prompts[1].endswith(
        "<|im_start|>user\n<tool_response>\n" + tool["content"] + "\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>"
    )


def test_needs_a_server():
    with pytest.raises(ConfigError, match="needs a server"):
        make_agent("deepresearcher")
