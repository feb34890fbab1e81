"""The bundled GRPO trainer on the real ``trl.GRPOTrainer``: steps, resume, the reference model, the warm-start,
the command line, and the tokens the loss sees."""

from __future__ import annotations

import json
import re

import pytest
import torch

pytest.importorskip("trl")

from drgym.agents.grpo.checkpoint import latest_checkpoint, load_model
from drgym.agents.grpo.metrics import read_metrics
from drgym.agents.grpo.train import main, make_trainer, train
from drgym.errors import ConfigError
from tests.grpo.conftest import ScriptedPolicy, tiny_config


def _weights(directory) -> dict[str, torch.Tensor]:
    model, _ = load_model(directory)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def scripted_config(tmp_path, **overrides):
    """:func:`tiny_config` with room for the scripted policy's byte-level turns and tool results."""
    return tiny_config(tmp_path, **{"max_turn_tokens": None, "max_completion_length": 2048, **overrides})


def _scripted():
    """A scripted policy (search, then answer or break the format by seed) over its own tiny model: rewards
    within a group differ, so every step has an advantage and a non-zero gradient."""
    from drgym.llm.tiny import tiny_causal_lm

    return ScriptedPolicy(*tiny_causal_lm(seed=1))


@pytest.mark.slow
def test_resume_continues_exactly_like_one_run(tmp_path):
    straight = train(scripted_config(tmp_path / "a", max_steps=4, save_steps=2), generator=_scripted())
    assert straight["steps"] == 4
    out_a = tmp_path / "a" / "run"
    assert sorted(p.name for p in out_a.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    cfg = scripted_config(tmp_path / "b", max_steps=2, save_steps=2)
    train(cfg, generator=_scripted())
    out = tmp_path / "b" / "run"
    ckpt = latest_checkpoint(out)
    assert ckpt.name == "checkpoint-2"
    # TRL's files (optimizer, scheduler, RNG states, trainer state) and drgym's config beside the weights
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            "config.yaml", "tokenizer_config.json"} <= names
    second = train(scripted_config(tmp_path / "b", max_steps=4, save_steps=2), resume=True, generator=_scripted())
    assert second["steps"] == 4
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # no warm-start, no held-out questions: no step 0
    straight_rows = read_metrics(out_a / "metrics.jsonl")
    # the resumed steps pose the same questions, sample the same turns, get the same rewards and loss...
    assert len({r["rollout/reward_mean"] for r in rows}) > 1 or rows[0]["rollout/reward_std"] > 0
    for key in ("rollout/reward_mean", "rollout/response_tokens", "trl/loss", "trl/grad_norm"):
        assert [r[key] for r in rows] == [r[key] for r in straight_rows], key
    # ...and end on bit-identical weights (same machine: CPU kernels differ between processors)
    a, b = _weights(out_a / "checkpoint-4"), _weights(out / "checkpoint-4")
    start = _weights(out / "initial")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(not torch.equal(a[k], start[k]) for k in a) > 0  # and training changed them


def test_resume_and_output_dir_errors_name_what_to_do(tmp_path):
    train(tiny_config(tmp_path, max_steps=1, save_steps=1), generator=_scripted())
    other = tiny_config(tmp_path, max_steps=2, tiny_config={"hidden_size": 32, "intermediate_size": 64})
    with pytest.raises(ConfigError, match="hidden_size: 64 in the checkpoint, 32 in this run"):
        make_trainer(other, resume=True)
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        make_trainer(tiny_config(tmp_path), resume=False)
    with pytest.raises(ConfigError, match="no checkpoint in .* to resume from"):
        make_trainer(tiny_config(tmp_path / "empty"), resume=True)


@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_the_reference_model_is_the_warm_started_policy(tmp_path, beta):
    cfg = tiny_config(
        tmp_path, beta=beta, warmstart_steps=3, warmstart_episodes=4, warmstart_min_reward=-1.0,
        warmstart_agent_kwargs={"pages_to_read": 0},
    )
    trainer, callback = make_trainer(cfg)
    warm = _weights(tmp_path / "run" / "warmstart")
    policy = dict(trainer.model.named_parameters())
    assert all(torch.equal(policy[k].detach(), warm[k]) for k in warm)  # RL starts from the warm-start
    if beta == 0:
        assert trainer.ref_model is None
    else:
        ref = dict(trainer.ref_model.named_parameters())
        assert all(torch.equal(ref[k].detach(), warm[k]) for k in warm)
    assert callback.warm["warmstart/demonstrations"] > 0


def test_no_tool_token_is_in_the_loss_of_the_bundled_trainer(tmp_path):
    from tests.integrations.test_trl import assert_no_tool_token_in_the_loss

    trainer, callback = make_trainer(scripted_config(tmp_path, num_generations=4, seed=1), generator=_scripted())
    trainer.current_gradient_accumulation_steps = 1  # what trainer.train() sets before its first loss
    assert_no_tool_token_in_the_loss(trainer, callback.rollout, group=4)


def test_sampled_ids_are_exactly_the_trained_ids(tmp_path):
    policy = _scripted()
    trainer, callback = make_trainer(scripted_config(tmp_path, per_device_train_batch_size=2), generator=policy)
    inputs = trainer._generate_and_score_completions([dict(trainer.train_dataset[0]) for _ in range(2)])
    by_turn = policy.calls  # one call per turn, a Sample per live episode
    for b, ep in enumerate(callback.rollout.episodes):
        kept = [t for t, m in zip(inputs["completion_ids"][b].tolist(), inputs["tool_mask"][b].tolist()) if m]
        want = [t for call in by_turn if b < len(call) for t in call[b].token_ids][: len(kept)]
        assert kept and kept == [t for t, m in zip(ep.completion_ids, ep.env_mask) if m] == want


def test_command_line_run_writes_metrics_plot_and_checkpoints(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    cfg = tiny_config(tmp_path, num_eval_questions=2, plot=True, max_turn_tokens=6)
    cfg.to_yaml(path)
    code = main(["--config", str(path), "--max_steps", "2", "--save_steps", "1", "--eval_steps", "1"])
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "run"
    assert code == 0 and summary["steps"] == 2 and summary["checkpoint"] == str(out / "checkpoint-2")
    for key in ("train_reward_mean_first", "train_f1_last", "eval_reward_mean_first", "eval_f1_last",
                "eval_format_error_rate_last"):
        assert key in summary, key
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and "eval/f1" in rows[0]
    for key in ("rollout/reward_mean", "rollout/f1", "rollout/format_error_rate", "eval/f1", "eval/reward_mean",
                "eval/format_error_rate", "trl/loss", "trl/grad_norm", "trl/learning_rate", "charts/env_seconds"):
        assert key in rows[1], key
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "checkpoint-1" / "config.yaml").is_file() and (out / "config.yaml").is_file()


def test_command_line_names_an_unknown_or_retired_setting(capsys):
    assert main(["--num_generation", "4"]) == 2
    assert "unknown setting `num_generation`" in capsys.readouterr().err
    assert main(["--prompts_per_step", "4"]) == 2
    assert re.search(r"`prompts_per_step` .* retired .* per_device_train_batch_size", capsys.readouterr().err)


def test_a_run_can_start_from_another_runs_checkpoint(tmp_path):
    train(scripted_config(tmp_path / "a", max_steps=1, save_steps=1), generator=_scripted())
    ckpt = tmp_path / "a" / "run" / "checkpoint-1"
    trainer, _ = make_trainer(tiny_config(tmp_path / "b", model_name_or_path=str(ckpt)))
    saved = _weights(ckpt)
    assert all(torch.equal(p.detach(), saved[k]) for k, p in trainer.model.named_parameters())


@pytest.mark.slow
def test_word_vocab_with_frozen_embeddings_trains_everything_else(tmp_path):
    from drgym.agents.grpo.rollout import build_task
    from drgym.llm.tiny import tiny_causal_lm

    cfg = scripted_config(tmp_path, tiny_vocab="word", freeze_embeddings=True, tiny_config={"embedding_std": 1.0},
                      max_steps=1, save_steps=1, learning_rate=1e-2, num_generations=4, seed=1)
    # a scripted policy with the run's own word tokenizer (trained on the same task text): rewards differ
    train(cfg, generator=ScriptedPolicy(*tiny_causal_lm("word", seed=1, texts=build_task(cfg).texts)))
    start, end = _weights(tmp_path / "run" / "initial"), _weights(tmp_path / "run")
    emb = "model.embed_tokens.weight"
    assert torch.equal(start[emb], end[emb])
    assert sum(not torch.equal(start[k], end[k]) for k in start if k != emb) > 0


@pytest.mark.parametrize(
    "mode,processes,tp,message",
    [
        ("server", 2, 1, "vllm_mode='server' runs on one training process only"),
        ("colocate", 2, 2, "needs vllm_tensor_parallel_size=1"),
    ],
)
def test_vllm_settings_the_multi_turn_rollout_cannot_drive_are_refused(task_rollout, mode, processes, tp, message):
    from types import SimpleNamespace

    trainer = SimpleNamespace(  # only the attributes the guard reads: no vLLM engine is built
        use_vllm=True, vllm_mode=mode, accelerator=SimpleNamespace(num_processes=processes),
        args=SimpleNamespace(vllm_tensor_parallel_size=tp),
    )
    with pytest.raises(ConfigError, match=re.escape(message)), task_rollout._generator(trainer, None):
        pass


@pytest.fixture
def task_rollout(tmp_path):
    from drgym.agents.grpo.rollout import build_task
    from drgym.integrations.trl import make_rollout_func

    task = build_task(tiny_config(tmp_path))
    return make_rollout_func(dataset=task.records, **task.env_kwargs)
