"""GRPOConfig: defaults, YAML loading, the shipped configs, and errors that name the field to change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drgym.agents.grpo.config import GRPOConfig
from drgym.agents.grpo.train import build_parser
from drgym.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "agents" / "grpo" / "configs"


def test_every_field_is_documented_and_on_the_command_line():
    help_text = build_parser().format_help()
    for name in GRPOConfig.field_names():
        assert GRPOConfig.help(name).strip(), name
        assert f"--{name}" in help_text, name


def test_paper_config_has_the_paper_settings():
    cfg = GRPOConfig.from_yaml(CONFIGS / "qwen2.5-7b-paper.yaml")
    assert cfg.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert (cfg.prompts_per_step, cfg.num_generations) == (256, 16)
    assert cfg.learning_rate == 1e-6 and cfg.lr_scheduler_type == "constant"
    assert (cfg.epsilon, cfg.entropy_coef, cfg.beta) == (0.2, 0.001, 0.001)
    assert cfg.temperature == 1.0 and cfg.max_completion_length == 2000 and cfg.max_seq_length == 32768
    assert cfg.max_turns == 10 and cfg.max_grad_norm == 1.0 and cfg.num_iterations == 1
    assert cfg.bf16 and cfg.generation_backend == "vllm" and cfg.gradient_accumulation_steps is None
    assert cfg.rollout_batch_size == cfg.generation_batch_size == 4096
    assert cfg.loss_type == "dapo" and cfg.advantage_epsilon == 1e-6


def test_generation_batch_size_means_what_trl_means():
    cfg = GRPOConfig(prompts_per_step=4, num_generations=8, generation_batch_size=32)
    assert cfg.rollout_batch_size == cfg.generation_batch_size == 32
    assert GRPOConfig().generation_batch_size is None  # derived


def test_ring_task_holds_out_the_towns_of_its_own_ring():
    from drgym.agents.grpo.rollout import build_task

    cfg = GRPOConfig(
        dataset="synthetic", num_train_questions=40, num_eval_questions=8, synthetic_kinds=["population"],
        synthetic_neighbours=True, results_per_query=3,
    )
    task = build_task(cfg)
    assert sorted(task.eval_indices) == list(range(40, 48))  # the held-out ring's questions
    assert sorted(task.train_indices) == list(range(40))


def test_tiny_config_loads():
    cfg = GRPOConfig.from_yaml(CONFIGS / "tiny-cpu.yaml")
    assert cfg.model_name_or_path == "tiny" and cfg.device == "cpu" and cfg.warmstart_steps > 0


def test_yaml_values_are_checked_and_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-5\nbeta: 0\nnum_generations: 4\n")
    cfg = GRPOConfig.from_yaml(path, max_steps=7)
    assert cfg.learning_rate == 1e-5 and cfg.beta == 0.0 and isinstance(cfg.beta, float)
    assert cfg.max_steps == 7 and cfg.num_generations == 4


@pytest.mark.parametrize(
    "text,message",
    [
        ("learning_rat: 1.0e-5\n", "unknown setting `learning_rat` in {path}. Did you mean `learning_rate`?"),
        ("num_generations: 1\n", "GRPO needs at least 2 generations per question"),
        ("num_generations: four\n", "`num_generations` must be int, got 'four'"),
        (
            "loss_type: dr-grpo\n",
            ("`loss_type` must be one of 'dapo', 'grpo', 'bnpo', 'dr_grpo', got 'dr-grpo'. Did you mean "
             "`dr_grpo`?"),
        ),
        ("loss_type: token_mean\n", "`loss_type` 'token_mean' is now TRL's 'dapo'"),
        ("loss_type: seq_mean\n", "`loss_type` 'seq_mean' is now TRL's 'grpo'"),
        (
            "generation_batch_size: 64\n",
            ("`generation_batch_size` (64) is TRL's: the episodes of one rollout batch, prompts_per_step x "
             "num_generations (256 x 16 = 4096) here; set prompts_per_step: 4, or remove it."),
        ),
        ("generation_batch_size: 30\n", "make it a multiple of num_generations (16)"),
        ("generation_batch_sise: 64\n", ("unknown setting `generation_batch_sise` in {path}. Did you mean "
         "`generation_batch_size`?")),
        ("max_decode_batch: 0\n", "`max_decode_batch` must be >= 1, got 0"),
        ("warmstart_env_loss_weight: -1\n", "`warmstart_env_loss_weight` must be >= 0, got -1.0"),
        ("epsilon: 1.5\n", "`epsilon` (the PPO clip range) must be in (0, 1), got 1.5"),
        ("gradient_accumulation_steps: 3\n", "must split into whole optimizer steps"),
        ("max_prompt_length: 40000\n", "`max_prompt_length` (40000) must be below `max_seq_length` (32768)"),
        ("- a\n- b\n", "must hold a mapping of settings, got list"),
        ("a: [\n", "is not readable YAML"),
        ("stop: ['</answer>', '']\n", "`stop` must be a list of non-empty strings"),
        ("report_to: [wandb]\n", '`report_to` accepts only "tensorboard"'),
        (
            "dataset: demo\ntwo_hop_fraction: 0.5\n",
            "`two_hop_fraction`, `synthetic_kinds`, `synthetic_entities` and `synthetic_neighbours` only apply",
        ),
        ("dataset: demo\nsynthetic_entities: 8\n", "`synthetic_neighbours` only apply to dataset: synthetic"),
        ("dataset: demo\nsynthetic_neighbours: true\n", "only apply to dataset: synthetic"),
    ],
)
def test_config_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        GRPOConfig.from_yaml(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file /nonexistent.yaml does not exist"):
        GRPOConfig.from_yaml("/nonexistent.yaml")


def test_round_trip_through_yaml(tmp_path):
    cfg = GRPOConfig(
        num_generations=3,
        prompts_per_step=5,
        tiny_config={"hidden_size": 32},
        data_source=["nq"],
        dataset="demo",
    )
    cfg.to_yaml(tmp_path / "c.yaml")
    assert GRPOConfig.from_yaml(tmp_path / "c.yaml") == cfg
