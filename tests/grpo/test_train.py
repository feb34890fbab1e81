"""Training runs on a CPU with the tiny model: steps, checkpoints, resume, the update, failure handling."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
import torch
import yaml

from drgym.agents.grpo.checkpoint import checkpoint_dirs
from drgym.agents.grpo.metrics import read_metrics
from drgym.agents.grpo.rollout import collect_rollouts
from drgym.agents.grpo.train import TrainingError, data_indices, main, setup, train, update_policy
from drgym.errors import ConfigError
from tests.grpo.conftest import ScriptedPolicy, tiny_config


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _scripted_rollouts(run):
    policy = ScriptedPolicy(run.model, run.tokenizer)
    indices = data_indices(run.task.train_indices, run.cfg.prompts_per_step, 0, run.cfg.seed)
    cfg = run.cfg
    return asyncio.run(
        collect_rollouts(
            run.envs, policy, run.fmt, run.task.records, indices, cfg, step=0, group_size=cfg.num_generations
        )
    )


def test_two_steps_then_resume_continue_exactly_like_one_run(tmp_path):
    straight = train(tiny_config(tmp_path / "a", max_steps=4, save_steps=2))
    assert straight["steps"] == 4

    cfg = tiny_config(tmp_path / "b", max_steps=2, save_steps=2)
    first = train(cfg)
    out = tmp_path / "b" / "run"
    assert first["steps"] == 2 and [p.name for p in checkpoint_dirs(out)] == ["checkpoint-000002"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "rollout/reward_mean",
        "rollout/f1",
        "rollout/format_error_rate",
        "rollout/tool_calls",
        "rollout/response_tokens",
        "losses/kl",
        "losses/entropy",
        "losses/clip_fraction",
        "losses/grad_norm",
        "charts/rollout_tokens_per_second",
        "charts/rollout_seconds",
        "charts/update_seconds",
    ):
        assert key in rows[0], key
    ckpt = out / "checkpoint-000002"
    assert {p.name for p in ckpt.iterdir()} == {"model", "tokenizer", "trainer_state.pt", "config.yaml"}

    resumed_cfg = tiny_config(tmp_path / "b", max_steps=4, save_steps=2)
    run = asyncio.run(setup(resumed_cfg, resume=True))
    assert run.step == 2  # the next step is step 3
    saved = torch.load(ckpt / "trainer_state.pt", weights_only=False)["optimizer"]
    now = run.optimizer.state_dict()
    assert saved["param_groups"] == now["param_groups"]
    for key, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(now["state"][key][name])), (key, name)
    run.metrics.close()

    second = train(resumed_cfg, resume=True)
    assert second["steps"] == 4
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]
    from drgym.agents.grpo.checkpoint import load_model

    a, _ = load_model(tmp_path / "a" / "run" / "checkpoint-000004", "cpu")
    b, _ = load_model(out / "checkpoint-000004", "cpu")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    train(tiny_config(tmp_path, max_steps=1, save_steps=1))
    other = tiny_config(tmp_path, max_steps=2, tiny_config={"hidden_size": 32, "intermediate_size": 64})
    with pytest.raises(ConfigError, match="hidden_size: 64 in the checkpoint, 32 in this run"):
        asyncio.run(setup(other, resume=True))
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        asyncio.run(setup(tiny_config(tmp_path), resume=False))
    with pytest.raises(ConfigError, match="no checkpoint in .* to resume from"):
        asyncio.run(setup(tiny_config(tmp_path / "empty"), resume=True))


def test_update_changes_parameters_and_only_advantages_drive_the_policy_term(tmp_path):
    run = asyncio.run(setup(tiny_config(tmp_path, beta=0.0, entropy_coef=0.0, max_completion_length=200)))
    rollouts = _scripted_rollouts(run)
    rewards = [r.reward for r in rollouts]
    assert len(set(rewards)) > 1  # the scripted policy breaks the format on odd seeds

    for r in rollouts:
        r.reward = 0.5  # equal rewards in every group: zero advantages, no KL, no entropy → no update
    before = _params(run.model)
    update_policy(run, rollouts)
    assert all(torch.equal(before[k], v) for k, v in run.model.named_parameters())

    for r, reward in zip(rollouts, rewards):
        r.reward = reward
    stats = update_policy(run, rollouts)
    assert stats["losses/optimizer_steps"] == 1 and stats["losses/grad_norm"] > 0
    assert stats["losses/clip_fraction"] == 0.0  # the ratio is exactly 1 on the single pass
    assert stats["rollout/logprob_gap"] < 1e-4  # the sampler's log-probs are the trainer's
    assert any(not torch.equal(before[k], v) for k, v in run.model.named_parameters())
    run.metrics.close()


@pytest.mark.parametrize("beta,models", [(0.0, 1), (0.01, 2)])
def test_beta_zero_builds_no_reference_model(tmp_path, beta, models):
    from transformers import Qwen2ForCausalLM

    def count() -> int:
        gc.collect()
        return sum(type(o) is Qwen2ForCausalLM for o in gc.get_objects())

    start = count()
    run = asyncio.run(setup(tiny_config(tmp_path, beta=beta)))
    assert (run.ref_model is None) == (beta == 0.0)
    assert count() - start == models
    if run.ref_model is not None:
        assert all(not p.requires_grad for p in run.ref_model.parameters())
        for (_, a), (_, b) in zip(run.ref_model.named_parameters(), run.model.named_parameters()):
            assert torch.equal(a, b)  # the reference is the policy RL starts from
    run.metrics.close()


def test_nan_rewards_skip_the_step_then_stop_the_run(tmp_path):
    run = asyncio.run(setup(tiny_config(tmp_path, max_nonfinite_steps=2, max_completion_length=200)))
    rollouts = _scripted_rollouts(run)
    rollouts[0].reward = float("nan")
    before = _params(run.model)
    stats = update_policy(run, rollouts)
    assert stats["losses/skipped_steps"] == 1 and stats["losses/optimizer_steps"] == 0
    assert all(torch.equal(before[k], v) for k, v in run.model.named_parameters())
    with pytest.raises(TrainingError, match="2 optimizer steps in a row had a NaN/inf loss"):
        update_policy(run, rollouts)
    run.metrics.close()


def test_out_of_memory_names_the_setting_to_lower(tmp_path):
    run = asyncio.run(setup(tiny_config(tmp_path, beta=0.0)))
    rollouts = _scripted_rollouts(run)

    def exhausted(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    run.model.register_forward_pre_hook(exhausted)
    with pytest.raises(TrainingError, match=r"lower per_device_train_batch_size \(now 2\)"):
        update_policy(run, rollouts)
    run.metrics.close()


def test_warmstart_imitates_scripted_episodes_and_becomes_the_reference(tmp_path):
    cfg = tiny_config(
        tmp_path,
        warmstart_steps=2,
        warmstart_episodes=6,
        warmstart_min_reward=0.0,
        warmstart_batch_size=2,
        warmstart_agent_kwargs={"pages_to_read": 0},
        beta=0.01,
        max_completion_length=200,
    )
    run = asyncio.run(setup(cfg))
    rows = read_metrics(run.metrics.path)
    assert rows[0]["step"] == 0 and rows[0]["warmstart/demonstrations"] >= 1
    assert rows[0]["warmstart/episodes"] == 6
    assert (tmp_path / "run" / "warmstart" / "model").is_dir()
    fresh = asyncio.run(setup(tiny_config(tmp_path / "other", beta=0.01)))
    changed = any(not torch.equal(a, b) for a, b in zip(run.model.parameters(), fresh.model.parameters()))
    assert changed  # the warm-start trained the policy
    for a, b in zip(run.ref_model.parameters(), run.model.parameters()):
        assert torch.equal(a, b)
    run.metrics.close()
    fresh.metrics.close()


def test_data_order_is_a_pure_function_of_the_step():
    pool = list(range(10, 17))
    steps = [data_indices(pool, 3, s, seed=5) for s in range(5)]
    assert steps == [data_indices(pool, 3, s, seed=5) for s in range(5)]
    flat = [i for s in steps for i in s]
    assert sorted(flat[:7]) == pool and sorted(flat[7:14]) == pool  # every question once per pass
    assert steps != [data_indices(pool, 3, s, seed=6) for s in range(5)]


def test_command_line_run_writes_metrics_tensorboard_and_plot(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    values = tiny_config(tmp_path).to_dict() | {"report_to": ["tensorboard"], "plot": True, "max_steps": 1}
    path.write_text(yaml.safe_dump(values))
    assert main(["--config", str(path), "--save_steps", "1", "--learning_rate", "2e-3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "run"
    assert summary["steps"] == 1 and summary["checkpoint"].endswith("checkpoint-000001")
    assert (out / "curves.png").stat().st_size > 1000
    assert any((out / "tensorboard").iterdir())
    saved = yaml.safe_load((out / "checkpoint-000001" / "config.yaml").read_text())
    assert saved["learning_rate"] == 2e-3 and saved["save_steps"] == 1

    assert main(["--config", str(path), "--num_generations", "1"]) == 2
    assert "GRPO needs at least 2 generations" in capsys.readouterr().err


def test_a_run_can_start_from_another_runs_checkpoint(tmp_path):
    train(tiny_config(tmp_path / "first", max_steps=1, save_steps=1))
    ckpt = tmp_path / "first" / "run" / "checkpoint-000001"
    cfg = tiny_config(tmp_path / "second", model_name_or_path=str(ckpt), synthetic_kinds=["founder"])
    run = asyncio.run(setup(cfg))
    from drgym.agents.grpo.checkpoint import load_model

    saved, _ = load_model(ckpt, "cpu")
    for a, b in zip(saved.parameters(), run.model.parameters()):
        assert torch.equal(a, b)
    assert all(run.task.records[i].metadata["kind"] == "founder" for i in run.task.train_indices)
    run.metrics.close()


def test_word_vocab_with_frozen_embeddings_trains_everything_else_and_resumes(tmp_path):
    cfg = tiny_config(
        tmp_path,
        tiny_vocab="word",
        tiny_config={"embedding_std": 0.25},
        freeze_embeddings=True,
        beta=0.0,
        entropy_coef=0.0,
        max_completion_length=200,
    )
    run = asyncio.run(setup(cfg))
    names = set(run.task.records[0].question.rstrip("?").split())
    assert all(len(run.tokenizer(n, add_special_tokens=False)["input_ids"]) == 1 for n in names)
    assert run.model.config.vocab_size == len(run.tokenizer)
    rollouts = _scripted_rollouts(run)
    assert len({r.reward for r in rollouts}) > 1
    before = _params(run.model)
    stats = update_policy(run, rollouts)
    assert stats["losses/grad_norm"] > 0
    emb = "model.embed_tokens.weight"
    after = dict(run.model.named_parameters())
    assert torch.equal(before[emb], after[emb])  # frozen (and the tied output head with it)
    assert any(not torch.equal(before[k], v) for k, v in after.items() if k != emb)
    run.metrics.close()

    train(tiny_config(tmp_path / "r", tiny_vocab="word", freeze_embeddings=True, max_steps=1, save_steps=1))
    resumed = asyncio.run(
        setup(tiny_config(tmp_path / "r", tiny_vocab="word", freeze_embeddings=True, max_steps=2), resume=True)
    )
    assert resumed.step == 1 and not resumed.model.get_input_embeddings().weight.requires_grad
    assert resumed.tokenizer.get_vocab() == run.tokenizer.get_vocab()
    resumed.metrics.close()
