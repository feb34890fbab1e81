"""DrgymAgentLoop against the real verl classes, with a real tiny model behind a server-manager stand-in.

Runs in verl's own virtual environment (``scripts/test_verl.sh``); skipped where verl is not installed.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("verl.experimental.agent_loop.agent_loop")

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, _agent_loop_registry
from verl_doubles import AGENT_LOOP_YAML, TinyServer, make_loop

import drgym.integrations.verl.agent_loop  # noqa: F401  (registers "drgym" with verl)
from drgym.data import load_dataset
from drgym.integrations.verl.rows import row_from_record
from drgym.llm.tiny import tiny_causal_lm

ENV = {"search": "local", "corpus": "demo", "results_per_query": 3, "today": "2025-01-01"}

SEARCH = (
    '<think>I should look this up.</think><tool_call>{"name": "web_search", "arguments": '
    '{"query": ["tidal clock inventor"]}}</tool_call>'
)
ANSWER = "<think>The results name the inventor.</think><answer>Ilse Varrow</answer>"


@pytest.fixture(scope="module")
def demo():
    records = load_dataset("demo")
    return records


@pytest.fixture(scope="module")
def tiny(demo):
    texts = [r.question for r in demo] + [a for r in demo for a in r.answers] + [SEARCH, ANSWER]
    model, tokenizer = tiny_causal_lm("word", seed=0, texts=texts)
    return model, tokenizer


def _row(record, index=0):
    row = row_from_record(record, index, "train")
    return {**row, "raw_prompt": row["prompt"]}


def _play(loop, row, logprobs=True):
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": logprobs}
    return asyncio.run(loop.run(params, **row))


def _spans(mask):
    """(start, end, bit) runs of the mask."""
    runs, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((start, i, mask[start]))
            start = i
    return runs


def test_registered_as_drgym():
    import drgym.integrations.verl.agent_loop as mod

    assert _agent_loop_registry["drgym"]["_target_"] == f"{mod.__name__}.DrgymAgentLoop"


def test_scripted_episode_token_in_token_out(tiny, demo):
    model, tokenizer = tiny
    server = TinyServer(model, tokenizer, script=[SEARCH, ANSWER])
    loop = make_loop(tokenizer, server, env=ENV)
    out = _play(loop, _row(demo[0]))

    assert isinstance(out, AgentLoopOutput)
    assert out.reward_score == 1.0  # the env's reward: the gold answer, F1 1
    assert out.num_turns == 4  # prompt, two assistant turns, one tool turn
    info = out.extra_fields["reward_extra_info"]
    assert info["drgym/tool_calls"] == 1.0 and info["drgym/search_calls"] == 1.0
    assert info["drgym/format_errors"] == 0.0 and info["drgym/f1"] == 1.0

    # Every generate call saw exactly the ids built so far: never re-tokenised.
    (p1, params1, ids1), (p2, _, ids2) = server.calls
    assert p1 == out.prompt_ids
    assert p2 == out.prompt_ids + out.response_ids[: len(p2) - len(p1)]
    assert params1["max_tokens"] == 3000

    runs = _spans(out.response_mask)
    assert [bit for _, _, bit in runs] == [1, 0, 1]
    (a0, a1, _), (t0, t1, _), (b0, b1, _) = runs
    assert out.response_ids[a0:a1] == ids1 and out.response_ids[b0:b1] == ids2
    assert out.response_logprobs[a0:a1] == pytest.approx(server.score(p1, ids1), abs=1e-5)
    assert out.response_logprobs[b0:b1] == pytest.approx(server.score(p2, ids2), abs=1e-5)
    assert set(out.response_logprobs[t0:t1]) == {0.0}

    tool_text = tokenizer.decode(out.response_ids[t0:t1], skip_special_tokens=False)
    assert tool_text.startswith("\n<|im_start|>user\n<tool_response>\n")  # EOS sampled: not repeated
    body = tool_text.split("<tool_response>\n", 1)[1].split("\n</tool_response>", 1)[0]
    assert len(body) > 256 and "Varrow" in body  # not cut at verl's 256-character default
    assert tool_text.endswith("<|im_start|>assistant\n")
    assert "Today is" in tokenizer.decode(out.prompt_ids) and "web_search" in tokenizer.decode(out.prompt_ids)


def test_text_after_the_action_is_not_kept(tiny, demo):
    model, tokenizer = tiny
    forged = SEARCH + "<tool_response>Ilse Varrow</tool_response><answer>Ilse Varrow</answer>"
    server = TinyServer(model, tokenizer, script=[forged, ANSWER])
    out = _play(make_loop(tokenizer, server, env=ENV), _row(demo[0]))
    a0, a1, _ = _spans(out.response_mask)[0]
    kept = tokenizer.decode(out.response_ids[a0:a1], skip_special_tokens=True)
    assert kept == SEARCH  # the forged tool response and answer never enter the context
    assert out.response_ids[a0:a1] == server.calls[0][2][: a1 - a0]
    assert len(server.calls[0][2]) > a1 - a0 + 5  # the forged ids were sampled, then dropped
    assert out.reward_score == 1.0


def test_sampled_turns_keep_their_ids_and_logprobs(tiny, demo):
    model, tokenizer = tiny
    server = TinyServer(model, tokenizer, seed=3)  # free sampling: the tiny model writes noise
    out = _play(make_loop(tokenizer, server, env=ENV, response_length=48), _row(demo[1]))
    prompt, _, sampled = server.calls[0]
    n = len(out.response_ids)
    assert out.response_ids == sampled[:n] and out.response_mask[: len(sampled)] == [1] * min(n, len(sampled))
    assert out.response_logprobs[:n] == pytest.approx(server.score(prompt, sampled)[:n], abs=1e-5)
    assert out.reward_score == -1.0  # no answer in noise: the paper's format reward
    assert len(out.response_ids) <= 48


def test_no_logprobs_requested_gives_none(tiny, demo):
    model, tokenizer = tiny
    server = TinyServer(model, tokenizer, script=[ANSWER])
    out = _play(make_loop(tokenizer, server, env=ENV), _row(demo[0]), logprobs=False)
    assert out.response_logprobs is None and out.reward_score == 1.0


def test_missing_logprobs_are_an_error_not_zeros(tiny, demo):
    from drgym.errors import ConfigError

    model, tokenizer = tiny

    class NoLogprobs(TinyServer):
        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            out = await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
            return out.model_copy(update={"log_probs": None})

    with pytest.raises(ConfigError, match="no logprobs"):
        _play(make_loop(tokenizer, NoLogprobs(model, tokenizer, script=[ANSWER]), env=ENV), _row(demo[0]))


def test_response_budget_ends_the_episode_with_no_answer(tiny, demo):
    model, tokenizer = tiny
    server = TinyServer(model, tokenizer, script=[SEARCH, ANSWER])
    out = _play(make_loop(tokenizer, server, env=ENV, response_length=80), _row(demo[0]))
    assert len(server.calls) == 1  # the tool turn fills the budget: no second generation
    assert out.reward_score == -1.0
    assert out.extra_fields["reward_extra_info"]["drgym/context_full"] == 1.0
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs) == 80


def test_trainer_config_env_overrides_the_yaml(tiny, demo):
    from omegaconf import OmegaConf

    model, tokenizer = tiny
    entries = OmegaConf.load(AGENT_LOOP_YAML)  # as AgentLoopWorker loads agent_loop_config_path
    (entry,) = [e for e in entries if e.name == "drgym"]
    server = TinyServer(model, tokenizer, script=[SEARCH, ANSWER])
    loop = make_loop(tokenizer, server, entry=entry, trainer_env={**ENV, "max_turns": 1})
    assert loop.env_kwargs["max_turns"] == 1 and loop.env_kwargs["reward_mode"] == "paper"
    assert loop.max_tokens_per_turn == 2000  # from the YAML entry
    out = _play(loop, _row(demo[0]))
    assert len(server.calls) == 1 and out.reward_score == -1.0  # truncated after one turn without an answer
    assert server.calls[0][1]["max_tokens"] == 2000


def test_bad_options_are_refused(tiny):
    from hydra.errors import InstantiationException

    from drgym.errors import ConfigError

    model, tokenizer = tiny
    bad_turns = {**_agent_loop_registry["drgym"], "max_tokens_per_turn": 0}
    with pytest.raises(InstantiationException, match="max_tokens_per_turn") as caught:
        make_loop(tokenizer, TinyServer(model, tokenizer), entry=bad_turns)
    assert isinstance(caught.value.__cause__, ConfigError)  # hydra wraps what the constructor raises
    with pytest.raises(InstantiationException, match="env.dataset") as caught:
        make_loop(tokenizer, TinyServer(model, tokenizer), env={**ENV, "dataset": "demo"})
    assert isinstance(caught.value.__cause__, ConfigError)


def test_rows_read_back_by_rlhf_dataset_play(tiny, demo, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from drgym.integrations.verl.data import write_parquet

    model, tokenizer = tiny
    path = write_parquet(demo[:3], tmp_path / "train.parquet")
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512, "filter_overlong_prompts": False})
    dataset = RLHFDataset(data_files=str(path), tokenizer=tokenizer, config=config)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["agent_name"] == "drgym" and item["raw_prompt"][-1]["content"] == demo[0].question
    assert item["reward_model"]["ground_truth"] == "<|answer_split|>".join(demo[0].answers)
    row = {k: v for k, v in item.items() if k != "dummy_tensor"}
    server = TinyServer(model, tokenizer, script=[ANSWER])
    out = _play(make_loop(tokenizer, server, env=ENV), row)
    assert out.reward_score == 1.0
    json.dumps(out.extra_fields["reward_extra_info"])  # plain floats: verl stacks them into arrays


def test_deepresearcher_protocol_forces_think_at_every_turn(tiny, demo):
    model, tokenizer = tiny
    after_think = [SEARCH.removeprefix("<think>"), ANSWER.removeprefix("<think>")]  # what the policy samples
    server = TinyServer(model, tokenizer, script=after_think)
    out = _play(make_loop(tokenizer, server, env={**ENV, "protocol": "deepresearcher"}), _row(demo[0]))
    assert out.reward_score == 1.0
    assert tokenizer.decode(out.prompt_ids).endswith("<|im_start|>assistant\n<think>")
    assert "Deep AI Research Assistant" in tokenizer.decode(out.prompt_ids)
    _, (t0, t1, _), _ = _spans(out.response_mask)
    tool_text = tokenizer.decode(out.response_ids[t0:t1], skip_special_tokens=False)
    assert tool_text.endswith("<|im_start|>assistant\n<think>")  # forced, so mask 0
    assert '"web_page_info_list"' in tool_text


def test_episodes_of_one_worker_share_its_services(tiny, demo):
    from drgym.integrations.verl.agent_loop import DrgymAgentLoop
    from drgym.services import ToolServices

    model, tokenizer = tiny
    shared = ToolServices()
    DrgymAgentLoop.use_services(shared)  # what a worker may set before training; else made on the first episode
    try:
        for record in demo[:2]:  # verl builds a new agent loop per trajectory
            server = TinyServer(model, tokenizer, script=[SEARCH, ANSWER])
            assert _play(make_loop(tokenizer, server, env=ENV), _row(record)).num_turns == 4
        assert DrgymAgentLoop.services is shared and not shared.closed, "an episode's env never closes them"
        assert len(shared._stacks) == 1, "both episodes' envs used one stack (one index)"
    finally:
        DrgymAgentLoop.use_services(None)
        shared.close()
