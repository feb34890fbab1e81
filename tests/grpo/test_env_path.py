"""``rollout_path: environment_factory``: the bundled trainer on TRL's own tool loop (real ``trl.GRPOTrainer``,
real tiny Qwen2), its metrics, its token layout against the warm-start's, and the two-path plot."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

pytest.importorskip("trl")

from drgym.agents.grpo.checkpoint import load_model
from drgym.agents.grpo.metrics import read_metrics
from drgym.agents.grpo.train import make_trainer, train
from drgym.errors import ConfigError, DataError
from tests.grpo.conftest import tiny_config


def env_config(tmp_path, **overrides):
    """A tiny run on the environment_factory path: word tokenizer (TRL parses the JSON tool calls from text),
    a 3-step warm-start, room for a search result in the completion."""
    values = {
        "rollout_path": "environment_factory",
        "tiny_vocab": "word",
        "warmstart_steps": 3,
        "warmstart_episodes": 4,
        "warmstart_min_reward": -1.0,
        "warmstart_agent_kwargs": {"pages_to_read": 0},
        "max_turn_tokens": None,
        "max_completion_length": 512,
        "learning_rate": 1e-2,
        **overrides,
    }
    return tiny_config(tmp_path, **values)


def _script(trainer):
    """Make the trainer's own model write scripted turns (search, then answer or break the format by row), so
    a group's rewards differ; its forward, which TRL trains, stays the real tiny Qwen2's."""
    from tests.integrations.test_trl import ScriptedQwen2

    trainer.model.__class__ = ScriptedQwen2
    trainer.model.script_tokenizer = trainer.processing_class


def _replay(env_kwargs, record, actions):
    from drgym.env import WebResearchEnv

    env = WebResearchEnv(**env_kwargs)
    env.reset(options={"question": record.question, "answers": list(record.answers)})
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return reward
    return None


@pytest.mark.parametrize("schemas", [True, False])
def test_environment_factory_path_trains_on_the_envs_rewards(tmp_path, schemas):
    from drgym.agents.grpo.rollout import build_task

    cfg = env_config(tmp_path, tool_schemas_in_prompt=schemas)
    trainer, callback = make_trainer(cfg)
    _script(trainer)
    assert trainer.args.max_tool_calling_iterations == cfg.max_turns - 1
    start = {k: p.detach().clone() for k, p in trainer.model.named_parameters()}
    warm, _ = load_model(tmp_path / "run" / "warmstart")
    assert all(torch.equal(start[k], p.detach()) for k, p in warm.named_parameters())  # RL starts from it
    trainer.train()
    assert trainer.state.global_step == 2
    assert sum(not torch.equal(start[k], p.detach()) for k, p in trainer.model.named_parameters()) > 0
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and "warmstart/demonstrations" in rows[0]
    for row in rows[1:]:
        for key in ("rollout/reward_mean", "rollout/f1", "rollout/format_error_rate", "rollout/turns",
                    "rollout/tool_calls", "charts/rollout_seconds", "charts/step_seconds"):
            assert key in row, key
        # the rewards logged are the ones TRL trained on: the env's get_reward
        assert row["rollout/reward_mean"] == pytest.approx(row["trl/rewards/WebResearchToolEnv/mean"])
        assert row["rollout/episodes"] == 4 and row["rollout/tool_calls"] == 1.0 and row["rollout/turns"] == 2.0
        assert row["rollout/format_error_rate"] == 0.5  # the odd rows broke the format
    # and the env's reward is what a fresh env gives the same turns
    task = build_task(cfg)
    for tool_env in trainer.environments:
        ep = tool_env.env._episode
        actions = [m["content"] for m in ep.messages if m["role"] == "assistant"]
        assert _replay(task.env_kwargs | {"dataset": task.records}, ep.record, actions) == tool_env.get_reward()
    assert {e.get_reward() for e in trainer.environments} >= {-1.0}
    callback.rollout.close()


def test_a_bad_rollout_path_is_named_with_the_valid_values(tmp_path):
    with pytest.raises(ConfigError, match=r"`rollout_path` must be one of 'rollout_func', 'environment_factory', "
                                          r"got 'environment'\. Did you mean `environment_factory`\?"):
        tiny_config(tmp_path, rollout_path="environment")


def test_a_generator_is_refused_on_the_environment_factory_path(tmp_path):
    with pytest.raises(ConfigError, match="a generator samples the rollout_func path's turns"):
        make_trainer(env_config(tmp_path), generator=object())
    assert not (tmp_path / "run").exists()  # refused before any warm-start


def test_no_tool_schemas_needs_a_template_it_can_render_without_them(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from drgym.agents.grpo.env_path import prepare_tokenizer
    from drgym.llm.tiny import tiny_causal_lm

    _, tokenizer = tiny_causal_lm("word", seed=0, texts=["a b"])
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    cfg = env_config(tmp_path, tool_schemas_in_prompt=False, chat_template="{{ messages[0]['content'] }}")
    with pytest.raises(ConfigError, match="`tool_schemas_in_prompt: false` .* needs the tiny model's chat template"):
        prepare_tokenizer(tokenizer, cfg)


@pytest.mark.parametrize("schemas", [True, False])
def test_the_warm_start_layout_against_trls(tmp_path, schemas):
    """The warm-start's ids of a scripted episode, under drgym's ChatML and Qwen2.5's template (which the path
    switches to), and TRL's ids of the same episode: the same after the prompt, but for TRL's EOS at the end
    of the last turn; TRL's prompt carries the tool schemas on top (unless tool_schemas_in_prompt is false)."""
    from trl.chat_template_utils import qwen2_5_chat_template

    from drgym.agent import make_agent
    from drgym.agents.grpo.env_path import compare_layouts, qwen2_5_without_schemas, trl_episode_ids
    from drgym.agents.grpo.rollout import ChatFormat, build_task, make_envs
    from drgym.agents.grpo.warmstart import _play
    from drgym.llm.local import CHATML_TEMPLATE

    cfg = env_config(tmp_path, warmstart_steps=0, tool_schemas_in_prompt=schemas)
    task = build_task(cfg)
    trainer, callback = make_trainer(cfg)
    callback.rollout.close()
    (env,) = make_envs(task, 1)
    messages, _ = asyncio.run(_play(env, make_agent("scripted", pages_to_read=0), task.train_indices[0]))
    tok = trainer.processing_class
    assert tok.chat_template == (qwen2_5_chat_template if schemas else qwen2_5_without_schemas())
    warm = ChatFormat(tok, chat_template=CHATML_TEMPLATE, system_prompt=cfg.system_prompt)
    demo = warm.episode_ids(warm.messages(messages))
    qwen = ChatFormat(tok, system_prompt=cfg.system_prompt)
    assert qwen.episode_ids(qwen.messages(messages)) == demo
    layout = compare_layouts(demo, trl_episode_ids(trainer, qwen.messages(messages)))
    assert layout["same_after_prompt"] and layout["eos_added"] == 1
    assert layout["prompt_extra"] > 100 if schemas else layout["prompt_extra"] == 0  # the tool schemas
    assert layout["policy_mask_differs"] == 1  # the EOS after the tool call: the env's in one, sampled in TRL's


def test_the_plot_compares_two_paths_and_names_a_missing_file(tmp_path, capsys):
    from drgym.agents.grpo.plot_paths import group_runs, load_run, main, summarize

    dirs = []
    for path, seed, offset in (("rollout_func", 0, 0.0), ("rollout_func", 1, 0.2), ("environment_factory", 0, -0.5)):
        run = tmp_path / f"{path}-{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(f"rollout_path: {path}\nseed: {seed}\n")
        rows = [{"step": 0, "eval/f1": 0.1 + offset}]
        rows += [{"step": s, "rollout/reward_mean": s * 0.1 + offset, "rollout/f1": 0.2, "rollout/format_error_rate":
                  0.5} for s in range(1, 4)]
        rows += [{"step": 3, "eval/f1": 0.3 + offset}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(run)
    groups = group_runs([load_run(d) for d in dirs])
    assert list(groups) == ["rollout_func", "environment_factory"] and [r.seed for r in groups["rollout_func"]] == [0, 1]
    out = tmp_path / "fig" / "paths.png"
    assert main([*map(str, dirs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "rollout_func 1 " in table and "environment_factory mean[min,max] " in table
    first = summarize(groups["rollout_func"][0])
    assert first["train_reward_last"] == pytest.approx(0.2) and first["eval_f1_first"] == pytest.approx(0.1)
    assert first["eval_f1_last"] == pytest.approx(0.3) and first["train_format_errors_last"] == 0.5
    (dirs[1] / "metrics.jsonl").unlink()
    assert main([*map(str, dirs), "--out", str(out)]) == 2
    assert f"run {dirs[1]}: metrics.jsonl is missing" in capsys.readouterr().err
    (dirs[0] / "config.yaml").unlink()
    with pytest.raises(DataError, match="config.yaml is missing"):
        load_run(dirs[0])


def test_environment_factory_run_resumes_and_its_checkpoint_plays_an_episode(tmp_path, capsys):
    from drgym.cli import main as drgym_main

    cfg = env_config(tmp_path, warmstart_steps=0, max_steps=1, save_steps=1, max_turn_tokens=8)
    train(cfg)
    second = train(cfg.replace(max_steps=2), resume=True)
    assert second["steps"] == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert "rollout_path: environment_factory" in (ckpt / "config.yaml").read_text()
    capsys.readouterr()
    code = drgym_main(["episode", "--agent", "grpo", "--checkpoint", str(ckpt), "--agent-arg", "max_new_tokens=6",
                       "--index", "0", "--compact"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["agent"] == "grpo" and out["turns"]


def test_warmstart_eos_after_answer_ends_the_last_policy_turn_with_eos(tmp_path):
    from drgym.agent import make_agent
    from drgym.agents.grpo.checkpoint import build_model
    from drgym.agents.grpo.rollout import ChatFormat, build_task, make_envs
    from drgym.agents.grpo.warmstart import collect_demonstrations

    cfg = env_config(tmp_path)
    task = build_task(cfg)
    _, tokenizer = build_model(cfg, task.texts)
    fmt = ChatFormat(tokenizer, system_prompt=cfg.system_prompt)
    envs = make_envs(task, 2)
    demos = {}
    for eos in (False, True):
        demos[eos], _ = asyncio.run(collect_demonstrations(
            envs, lambda: make_agent("scripted", pages_to_read=0), task.train_indices[:2], fmt,
            min_reward=-1.0, max_seq_length=4096, end_with_eos=eos,
        ))
    for plain, ended in zip(demos[False], demos[True]):
        assert plain.ids[-1] != tokenizer.eos_token_id
        assert ended.ids == plain.ids + [tokenizer.eos_token_id] and ended.mask == plain.mask + [1]
