"""GRPOConfig: drgym's settings and TRL's passed through, YAML loading, the shipped configs, and errors that name
the setting to change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("trl")

from drgym.agents.grpo.config import RETIRED, GRPOConfig, trl_field_names
from drgym.agents.grpo.train import build_parser
from drgym.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "agents" / "grpo" / "configs"


def test_every_setting_is_documented_and_on_the_command_line():
    help_text = build_parser().format_help()
    for name in GRPOConfig.field_names():
        assert GRPOConfig.help(name).strip(), name
        assert f"--{name} " in help_text, name
    for name in trl_field_names():
        assert f"--{name} " in help_text, name


def test_trl_fields_pass_through_with_trls_meaning():
    cfg = GRPOConfig.from_dict({"num_generations": 4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,
                                "use_cpu": True, "loss_type": "grpo", "max_turns": 3})
    args = cfg.trl_args()
    assert type(args).__module__.startswith("trl.") and args.loss_type == cfg.loss_type == "grpo"
    # TRL's own derivation: a generation batch is per_device_train_batch_size x steps_per_generation (= accumulation)
    assert args.steps_per_generation == 4 and cfg.generation_batch_size == 32
    assert cfg.max_turns == 3 and "max_turns" not in cfg.trl


def test_paper_config_maps_the_paper_settings():
    cfg = GRPOConfig.from_yaml(CONFIGS / "qwen2.5-7b-paper.yaml", use_cpu=True, bf16=False)
    assert cfg.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.num_generations == 16 and cfg.generation_batch_size == 4096  # 256 prompts x 16 per step
    assert cfg.learning_rate == 1e-6 and cfg.lr_scheduler_type == "constant"
    assert (cfg.epsilon, cfg.entropy_coef, cfg.beta) == (0.2, 0.001, 0.001)
    assert cfg.temperature == 1.0 and cfg.max_turn_tokens == 2000 and cfg.max_turns == 10
    assert cfg.max_grad_norm == 1.0 and cfg.num_iterations == 1 and cfg.loss_type == "dapo"
    assert cfg.use_vllm and cfg.vllm_mode == "colocate"


def test_tiny_config_loads():
    cfg = GRPOConfig.from_yaml(CONFIGS / "tiny-cpu.yaml")
    assert cfg.model_name_or_path == "tiny" and cfg.use_cpu and cfg.warmstart_steps > 0
    assert cfg.generation_batch_size == 32 and cfg.num_generations == 4  # 8 questions x 4 episodes per step


def test_ring_task_holds_out_the_towns_of_its_own_ring():
    from drgym.agents.grpo.rollout import build_task

    cfg = GRPOConfig.from_dict({
        "dataset": "synthetic", "num_train_questions": 40, "num_eval_questions": 8, "synthetic_kinds": ["population"],
        "synthetic_neighbours": True, "results_per_query": 3,
    })
    task = build_task(cfg)
    assert sorted(task.eval_indices) == list(range(40, 48))  # the held-out ring's questions
    assert sorted(task.train_indices) == list(range(40))


def test_ring_task_takes_the_name_and_value_pools():
    from drgym.agents.grpo.rollout import build_task

    cfg = GRPOConfig.from_dict({
        "dataset": "synthetic", "num_train_questions": 40, "num_eval_questions": 8, "synthetic_kinds": ["population"],
        "synthetic_neighbours": True, "synthetic_name_pool": 8, "synthetic_value_pool": 6, "results_per_query": 3,
    })
    task = build_task(cfg)
    names = [r.question.removeprefix("What is the population of ").removesuffix("?") for r in task.records]
    assert all(len(n.split()) == 2 for n in names) and len({n.split()[0] for n in names}) <= 8
    assert len({r.answers[0] for r in task.records}) <= 6


def test_yaml_values_are_checked_and_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-5\nbeta: 0\nnum_generations: 4\nwarmstart_learning_rate: 1e-3\n")
    cfg = GRPOConfig.from_yaml(path, max_steps=7)
    assert cfg.learning_rate == 1e-5 and cfg.beta == 0.0 and isinstance(cfg.beta, float)
    assert cfg.max_steps == 7 and cfg.num_generations == 4 and cfg.warmstart_learning_rate == 1e-3


@pytest.mark.parametrize(
    "text,message",
    [
        ("learning_rat: 1.0e-5\n", ("unknown setting `learning_rat` in {path} (neither drgym's nor "
         "trl.GRPOConfig's). Did you mean `learning_rate`?")),
        ("num_generation: 4\n", "Did you mean `num_generations`?"),
        ("warmstart_step: 4\n", "Did you mean `warmstart_steps`?"),
        ("num_generations: 1\n", "trl.GRPOConfig refused these settings"),
        ("max_turns: four\n", "`max_turns` must be int, got 'four'"),
        ("epsilon_hihg: 0.3\n", "Did you mean `epsilon_high`?"),
        ("prompts_per_step: 8\n", ("setting `prompts_per_step` in {path} is retired (the trainer is TRL's): "
         "TRL batches completions")),
        ("generation_backend: vllm\n", "use_vllm: true"),
        ("max_seq_length: 768\n", "max_completion_length (TRL's meaning"),
        ("device: cpu\n", "use_cpu: true"),
        ("warmstart_env_loss_weight: -1\n", "`warmstart_env_loss_weight` must be >= 0, got -1.0"),
        ("- a\n- b\n", "must hold a mapping of settings, got list"),
        ("a: [\n", "is not readable YAML"),
        ("dataset: demo\ntwo_hop_fraction: 0.5\n",
         ("`two_hop_fraction`, `synthetic_kinds`, `synthetic_entities`, `synthetic_neighbours`, "
          "`synthetic_name_pool` and `synthetic_value_pool` only apply")),
        ("dataset: demo\nsynthetic_neighbours: true\n", "only apply to dataset: synthetic"),
        ("dataset: demo\nsynthetic_name_pool: 24\n", "only apply to dataset: synthetic"),
    ],
)
def test_config_errors_name_the_setting(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        GRPOConfig.from_yaml(path)


def test_every_retired_setting_says_what_replaced_it():
    for name, instead in RETIRED.items():
        with pytest.raises(ConfigError, match=re.escape(f"`{name}` in config is retired")):
            GRPOConfig.from_dict({name: 1})
        assert instead


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file /nonexistent.yaml does not exist"):
        GRPOConfig.from_yaml("/nonexistent.yaml")


def test_round_trip_through_yaml(tmp_path):
    cfg = GRPOConfig.from_dict({
        "num_generations": 3, "per_device_train_batch_size": 6, "tiny_config": {"hidden_size": 32}, "data_source": ["nq"],
        "dataset": "demo", "learning_rate": 3e-4,
    })
    cfg.to_yaml(tmp_path / "c.yaml")
    again = GRPOConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg and again.learning_rate == 3e-4 and again.num_generations == 3
