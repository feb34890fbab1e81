"""PromptAgent playing whole demo episodes: canned model replies for the protocol paths, the tiny real model
in process and behind the loopback OpenAI-compatible server for the mechanics."""

from __future__ import annotations

import asyncio

import pytest

from drgym.agent import make_agent
from drgym.agents.prompt_baseline import STOP, PromptAgent, close_client, shared_client
from drgym.agents.prompt_baseline.prompts import ELIDED_OBSERVATION, FINAL_ANSWER_INSTRUCTION, FORMAT_REMINDER
from drgym.errors import ConfigError, LLMError
from drgym.llm.server import create_app
from drgym.runner import arun_episode, run_episode
from tests.agents.doubles import URL_RE, ContextWindow, Recording, ScriptedChat, tool_responses

TIDAL = {"index": 0}  # "Who invented the tidal clock?" -> Ilse Varrow


def _roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


def _browse_first_result(messages: list[dict]) -> str:
    url = URL_RE.search(tool_responses(messages)[-1]).group(0)
    return f'Thought: the first result looks right.\nAction: browse_webpage(["{url}"])'


# ------------------------------------------------------------------------------------------- configuration


def test_without_an_llm_the_error_says_what_is_missing_and_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match="PromptAgent needs a language model, but none is configured") as e:
        PromptAgent()
    message = str(e.value)
    assert "--agent prompt --llm openai:http://localhost:8000/v1 --model NAME" in message
    assert "python -m drgym.llm.server --model tiny" in message


def test_the_agent_is_built_by_name() -> None:
    agent = make_agent("prompt", llm=ScriptedChat([]))
    assert isinstance(agent, PromptAgent) and agent.name == "prompt"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"llm": 42}, "llm must be a ChatClient or a spec string"),
        ({"llm": ScriptedChat([]), "model": "m"}, "model= and llm_kwargs= apply only when llm is a spec"),
        ({"llm": "gpt4"}, "unknown LLM spec 'gpt4'"),
        ({"llm": ScriptedChat([]), "tool_role": "system"}, "tool_role must be one of"),
        ({"llm": ScriptedChat([]), "max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"llm": ScriptedChat([]), "format_retries": -1}, "format_retries must be an integer >= 0"),
        ({"llm": ScriptedChat([]), "timeout_s": 0}, "timeout_s must be positive"),
    ],
    ids=["type", "model-with-client", "spec", "tool-role", "max-tokens", "retries", "timeout"],
)
def test_bad_options_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PromptAgent(**kwargs)


async def test_an_agent_owns_a_client_built_from_a_spec() -> None:
    a = PromptAgent(llm="openai:http://127.0.0.1:9/v1", model="m")
    b = PromptAgent(llm="openai:http://127.0.0.1:9/v1", model="m")
    assert a.client is not b.client, "nothing is shared behind the caller's back"
    await a.aclose()
    await b.aclose()


async def test_agents_given_one_client_share_it_and_leave_it_to_its_owner(make_env, serve) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        message = {"role": "assistant", "content": "<answer>Ilse Varrow</answer>"}
        return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    url = await serve(app)
    kwargs = {"llm": f"openai:{url}", "model": "m"}
    client = shared_client(kwargs)  # what the benchmark does for the agents it builds from one spec
    assert client is not None and kwargs == {"llm": client}
    first, second = (PromptAgent(**kwargs) for _ in range(2))
    assert first.client is second.client is client
    await arun_episode(make_env(), first, options=TIDAL)
    sessions = list(client._states.values())
    assert len(sessions) == 1 and not sessions[0].session.closed
    await first.aclose()
    await first.aclose()  # idempotent
    assert not sessions[0].session.closed, "an agent never closes a client it was given"
    traj = await arun_episode(make_env(), second, options=TIDAL)  # the other agent goes on using it
    assert traj.reward == 1.0
    await second.aclose()
    assert not sessions[0].session.closed
    await close_client(client)  # its owner closes it
    assert sessions[0].session.closed and client._states == {}

    own = PromptAgent(llm=f"openai:{url}", model="m")  # built from a spec: the agent's own
    await arun_episode(make_env(), own, options=TIDAL)
    owned = list(own.client._states.values())
    await own.aclose()
    assert owned and owned[0].session.closed


# ------------------------------------------------------------------------------------- episodes, canned


async def test_imperfect_replies_are_repaired_and_reach_the_environment(make_env) -> None:
    model = ScriptedChat([
        ('I should search.\n```json\n{"name": "web_search", "arguments": {"query": "tidal clock inventor"}}'
        "\n```"),
        _browse_first_result,
        "<think>The page names the inventor.</think>\n<answer>Ilse Varrow",  # the server's stop ate </answer>
    ])
    agent = PromptAgent(llm=model)
    traj = await arun_episode(make_env(), agent, options=TIDAL)

    assert traj.error is None and traj.terminated and not traj.truncated
    assert [t.tool for t in traj.turns] == ["web_search", "browse_webpage", None]
    assert traj.search_calls == 1 and traj.pages_read == 1
    assert traj.turns[1].arguments["url_list"][0].startswith("https://local.drgym/demo/")
    assert traj.answer == "Ilse Varrow" and traj.f1 == 1.0 and traj.reward == 1.0
    assert all(t.format_ok for t in traj.turns)
    # usage is recorded per turn
    assert all(t.prompt_tokens and t.completion_tokens for t in traj.turns)
    assert traj.turns[2].prompt_tokens > traj.turns[0].prompt_tokens
    # what the model saw: the env's system prompt, then strictly alternating turns, tool results as user turns
    messages, sampling = model.calls[2]
    assert _roles(messages) == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Today is Wednesday, January 15, 2025")
    assert messages[3]["content"].startswith("<tool_response>\nResults for query")
    assert messages[2]["content"].endswith("</tool_call>")  # the repaired turn, as the env recorded it
    assert sampling == {"temperature": 0.6, "max_tokens": 2000, "stop": list(STOP)}
    assert agent.episode_stats["repairs"] == 3 and agent.episode_stats["llm_calls"] == 3


def test_the_sync_api_plays_the_same_episode(make_env) -> None:
    model = ScriptedChat([
        '{"name": "web_search", "arguments": {"query": ["tidal clock inventor"]}}',
        "<think>ok</think><answer>Ilse Varrow</answer>",
    ])
    traj = run_episode(make_env(), PromptAgent(llm=model), options=TIDAL)
    assert traj.error is None and traj.reward == 1.0 and len(traj.turns) == 2


async def test_tool_role_and_few_shot_options(make_env) -> None:
    model = ScriptedChat([
        '<tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock"]}}</tool_call>',
        "<answer>Ilse Varrow</answer>",
    ])
    agent = PromptAgent(llm=model, tool_role="tool", few_shot=True)
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.reward == 1.0
    messages, _ = model.calls[1]
    assert _roles(messages) == ["system", "user", "assistant", "tool"]
    assert "# Example" in messages[0]["content"] and messages[0]["content"].startswith("Today is")
    assert "<tool_response>" not in messages[3]["content"]


async def test_the_last_turn_asks_for_the_answer_instead_of_being_truncated(make_env) -> None:
    def keeps_searching(messages: list[dict]) -> str:
        if FINAL_ANSWER_INSTRUCTION in messages[-1]["content"]:
            return "<think>I have to answer now.</think><answer>Ilse Varrow</answer>"
        return '<tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock"]}}</tool_call>'

    model = ScriptedChat(keeps_searching)
    traj = await arun_episode(make_env(max_turns=3), PromptAgent(llm=model, max_turns=3), options=TIDAL)
    assert [t.tool for t in traj.turns] == ["web_search", "web_search", None]
    assert traj.terminated and not traj.truncated and traj.reward == 1.0
    assert FINAL_ANSWER_INSTRUCTION in model.calls[2][0][-1]["content"]
    assert all(FINAL_ANSWER_INSTRUCTION not in m["content"] for m in model.calls[1][0])


async def test_the_turn_limit_stated_by_the_env_wins_over_the_agents_default() -> None:
    model = ScriptedChat(["<answer>x</answer>"])
    agent = PromptAgent(llm=model, max_turns=10)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    agent.reset("Q?", {"system_prompt": "S", "messages": messages, "turn": 0, "max_turns": 1})
    await agent.aact("Q?", {"messages": messages, "turn": 0})
    assert FINAL_ANSWER_INSTRUCTION in model.calls[0][0][-1]["content"]


async def test_a_tool_call_on_the_last_turn_becomes_the_fallback_answer(make_env) -> None:
    model = ScriptedChat('<tool_call>{"name": "web_search", "arguments": {"query": ["x"]}}</tool_call>')
    traj = await arun_episode(make_env(max_turns=2), PromptAgent(llm=model, max_turns=2), options=TIDAL)
    assert traj.terminated and traj.answer == "unknown" and traj.reward == 0.0


async def test_an_unusable_reply_is_asked_for_again_once(make_env) -> None:
    model = ScriptedChat(["I am not sure what to do.", "<think>ok</think><answer>Ilse Varrow</answer>"])
    agent = PromptAgent(llm=model)
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.reward == 1.0 and len(traj.turns) == 1
    retry, _ = model.calls[1]
    assert retry[-2] == {"role": "assistant", "content": "I am not sure what to do."}
    assert retry[-1] == {"role": "user", "content": FORMAT_REMINDER}
    assert agent.episode_stats["format_retries"] == 1
    assert traj.turns[0].prompt_tokens == sum(len(m["content"]) for c in model.calls for m in c[0])


@pytest.mark.parametrize("replies", [["", ""], ["\x07\u07b3\x10&W", "still nothing"]],
                         ids=["empty", "garbage"])
async def test_a_model_that_never_follows_the_format_gets_the_format_reward(make_env, replies) -> None:
    traj = await arun_episode(make_env(), PromptAgent(llm=ScriptedChat(replies)), options=TIDAL)
    assert traj.error is None and traj.terminated
    assert traj.reward == -1.0 and not traj.turns[0].format_ok


async def test_a_call_with_broken_json_is_explained_by_the_env_and_the_model_recovers(make_env) -> None:
    model = ScriptedChat([
        '<think>search</think><tool_call>{"name": "web_search", "arguments": {"query": [</tool_call>',
        '<tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock"]}}</tool_call>',
        "<answer>Ilse Varrow</answer>",
    ])
    traj = await arun_episode(make_env(), PromptAgent(llm=model), options=TIDAL)
    first = traj.turns[0]
    assert first.format_ok and first.tool is None and first.error.startswith("Invalid tool call")
    assert "Error: Invalid tool call" in first.observation
    assert traj.turns[1].tool == "web_search" and traj.reward == 1.0


async def test_a_reply_cut_off_by_the_length_limit_is_completed(make_env) -> None:
    model = ScriptedChat([
        '<think>search</think>\n<tool_call>\n{"name": "web_search", "arguments": {"query": ["tidal clock inv',
        "<answer>Ilse Varrow</answer>",
    ])
    traj = await arun_episode(make_env(), PromptAgent(llm=model), options=TIDAL)
    assert traj.turns[0].arguments == {"query": ["tidal clock inv"]} and traj.reward == 1.0


# ----------------------------------------------------------------------------------- failures of the model


async def test_a_context_overflow_drops_old_tool_results_and_retries_once(make_env) -> None:
    def model_reply(messages: list[dict]) -> str:
        if len(tool_responses(messages)) < 2:
            return '<tool_call>{"name": "web_search", "arguments": {"query": ["tidal clock"]}}</tool_call>'
        return "<answer>Ilse Varrow</answer>"

    inner = ScriptedChat(model_reply)
    size_after_one_search = 5000  # system prompt (~2200 chars) + one search result fit, two do not
    agent = PromptAgent(llm=ContextWindow(inner, size_after_one_search))
    traj = await arun_episode(make_env(), agent, options=TIDAL)

    assert traj.error is None and traj.reward == 1.0 and len(traj.turns) == 3
    assert agent.episode_stats["overflow_recoveries"] == 1 and agent.episode_stats["overflow_answers"] == 0
    last, _ = inner.calls[-1]
    results = tool_responses(last)
    assert ELIDED_OBSERVATION in results[0] and "Results for query" in results[1]


async def test_when_nothing_fits_the_model_answers_from_its_own_reasoning(make_env) -> None:
    def model_reply(messages: list[dict]) -> str:
        if FINAL_ANSWER_INSTRUCTION in messages[-1]["content"]:
            assert all(ELIDED_OBSERVATION in r for r in tool_responses(messages))
            return "<think>From what I read earlier.</think><answer>Ilse Varrow</answer>"
        return ("<think>" + "long reasoning " * 300 + '</think><tool_call>{"name": "web_search", '
                '"arguments": {"query": ["tidal clock inventor"]}}</tool_call>')

    agent = PromptAgent(llm=ContextWindow(ScriptedChat(model_reply), 12_000))
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.error is None and traj.terminated and traj.reward == 1.0
    assert agent.episode_stats["overflow_answers"] == 1


async def test_when_not_even_the_question_fits_the_fallback_answer_is_given(make_env) -> None:
    agent = PromptAgent(llm=ContextWindow(ScriptedChat([]), 100))
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.error is None and traj.terminated and traj.answer == "unknown" and traj.reward == 0.0
    assert agent.last_usage == {"llm_calls": 0}


@pytest.mark.parametrize("failure", [LLMError("HTTP 500 from http://x/v1: boom"), LLMError("")],
                         ids=["msg", "empty"])
async def test_a_failing_model_ends_the_episode_with_an_answer_not_a_crash(make_env, failure) -> None:
    agent = PromptAgent(llm=ScriptedChat([failure]))
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.error is None and traj.terminated and traj.answer == "unknown"
    assert traj.reward == 0.0 and traj.turns[0].format_ok
    assert agent.episode_stats["llm_errors"] == 1
    assert agent.episode_stats["last_error"].startswith("LLMError")


async def test_a_model_that_never_answers_is_bounded_by_timeout_s(make_env) -> None:
    agent = PromptAgent(llm=ScriptedChat(["<answer>late</answer>"], delay=30), timeout_s=0.2)
    traj = await asyncio.wait_for(arun_episode(make_env(), agent, options=TIDAL), 10)
    assert traj.answer == "unknown" and "no reply within 0.2 s" in agent.episode_stats["last_error"]


# ---------------------------------------------------------------------------------------- the tiny real model


@pytest.fixture
def tiny_client(tiny_lm):
    from drgym.llm.local import TransformersChatClient

    return TransformersChatClient(*tiny_lm, seed=0)


async def test_the_tiny_model_plays_whole_episodes_in_process(make_env, tiny_client) -> None:
    agent = PromptAgent(llm=tiny_client, max_tokens=16, max_turns=2)
    for index in (0, 1):
        traj = await arun_episode(make_env(max_turns=2), agent, options={"index": index})
        assert traj.error is None and (traj.terminated or traj.truncated)
        assert 1 <= len(traj.turns) <= 2 and -1.0 <= traj.reward <= 1.0
        assert all(t.prompt_tokens > 2000 and 1 <= t.completion_tokens for t in traj.turns)
        assert agent.episode_stats["llm_calls"] >= len(traj.turns)


async def test_the_tiny_model_behind_the_openai_server(make_env, tiny_client, serve) -> None:
    recording = Recording(tiny_client)
    url = await serve(create_app(recording, "tiny"))
    agent = PromptAgent(llm=f"openai:{url}", model="tiny", max_tokens=16, max_turns=2)
    traj = await arun_episode(make_env(max_turns=2), agent, options=TIDAL)
    assert traj.error is None and (traj.terminated or traj.truncated)
    assert len(recording.calls) == agent.episode_stats["llm_calls"] >= 1
    messages, sampling = recording.calls[0]
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("Today is")
    assert messages[1] == {"role": "user", "content": "Who invented the tidal clock?"}
    assert sampling["stop"] == list(STOP) and sampling["max_tokens"] == 16
    assert traj.turns[0].prompt_tokens > 2000 and traj.turns[0].completion_tokens >= 1
    await agent.aclose()


async def test_a_context_overflow_reported_by_the_server_ends_the_episode_gracefully(
    make_env, tiny_lm, serve
) -> None:
    from drgym.llm.local import TransformersChatClient

    url = await serve(create_app(TransformersChatClient(*tiny_lm, max_context=512), "tiny"))
    agent = PromptAgent(llm=f"openai:{url}", model="tiny", max_tokens=8)
    traj = await arun_episode(make_env(), agent, options=TIDAL)
    assert traj.error is None and traj.terminated and traj.answer == "unknown"
    assert agent.episode_stats["overflow_answers"] == 1 and agent.episode_stats["llm_errors"] == 0
    await agent.aclose()
