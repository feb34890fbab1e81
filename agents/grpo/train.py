"""GRPO training of an LLM research policy inside ``drgym/WebResearch-v0`` (DeepResearcher's recipe), on TRL.

Run ``python -m agents.grpo.train --config agents/grpo/configs/tiny-cpu.yaml`` (any setting can be overridden,
e.g. ``--max_steps 5``; ``--resume`` continues from the newest checkpoint of ``output_dir``). The same command
runs under ``accelerate launch`` (DDP, DeepSpeed, FSDP: see agents/grpo/README.md).

Top to bottom:

1. **task, tokenizer, model**: the questions (training and held-out) and the policy to start from.
2. **warm-start**: supervised steps on a scripted agent's episodes (:func:`warm_start`), saved as
   ``<output_dir>/warmstart``: the policy RL starts from and TRL's reference model.
3. **trl.GRPOTrainer** with ``rollout_func=make_rollout_func(...)`` (``rollout_path: rollout_func``, the
   default; ``environment_factory`` lets TRL's own tool loop drive ``WebResearchToolEnv`` instead:
   agents/grpo/env_path.py): each generation batch plays whole drgym
   episodes, token-in/token-out (the ids trained on are the ids sampled; ``env_mask`` keeps every tool and
   template token out of the loss; ``logprobs`` are the sampler's), scored by the env (``rollout_reward``).
   TRL does the rest: group advantages, the clipped surrogate, KL, entropy, accumulation, the optimizer,
   logging, ``checkpoint-N`` saves, resume, and with ``use_vllm`` generation on its vLLM engine and the weight
   sync. :class:`DrgymCallback` writes ``metrics.jsonl`` and runs the held-out greedy evaluation.
4. **final save** (``output_dir``) and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drgym.errors import ConfigError, DrgymError

from .checkpoint import (
    CONFIG_FILE,
    build_model,
    check_architecture,
    latest_checkpoint,
    load_model,
    save_model,
)
from .checkpoint import _dtype as _weights_dtype
from .config import GRPOConfig, trl_field_names
from .metrics import MetricsLogger, episode_metrics, plot_curves, read_metrics
from .rollout import ChatFormat, Task, build_task, make_envs, train_dataset

__all__ = [
    "DrgymCallback",
    "TrainingError",
    "build_parser",
    "build_policy",
    "evaluate",
    "main",
    "make_trainer",
    "train",
    "warm_start",
]

logger = logging.getLogger(__name__)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.16: we pin it


class TrainingError(DrgymError):
    """Training cannot go on; the message says what to change."""


# ------------------------------------------------------------------------------------------------ model


def _start_dir(out: Path) -> Path | None:
    """Where this run's starting policy is saved (warm-started, or the tiny model's random init)."""
    return next((out / name for name in ("warmstart", "initial") if (out / name / "model").is_dir()), None)


def build_policy(cfg: GRPOConfig, task: Task, *, resuming: bool) -> tuple[Any, Any, dict[str, float]]:
    """The policy RL starts from and its tokenizer, with the warm-start's metrics.

    The main process builds the model, warm-starts it and saves it under ``<output_dir>`` (``warmstart/``, or
    ``initial/`` for an untrained tiny model); then every process loads that copy, so all ranks start equal
    and TRL builds its reference model from the same directory (``config._name_or_path``). A resumed run
    loads the saved start (TRL then loads the checkpoint's weights over it).
    """
    from accelerate import PartialState

    state = PartialState()
    out = Path(cfg.output_dir)
    warm: dict[str, float] = {}
    model = tokenizer = None
    if not resuming and state.is_main_process:
        model, tokenizer = build_model(cfg, task.texts)
        _give_template(tokenizer, cfg)
        if cfg.copy_pretrain_steps > 0:
            warm |= copy_stage(cfg, model, tokenizer)
        if cfg.warmstart_steps > 0:
            warm |= warm_start(cfg, model, tokenizer, task)
        if cfg.copy_pretrain_steps > 0 or cfg.warmstart_steps > 0:
            save_model(model, tokenizer, out / "warmstart")
        elif cfg.model_name_or_path == "tiny":
            save_model(model, tokenizer, out / "initial")  # a random init has no name TRL could reload it by
    state.wait_for_everyone()
    start = _start_dir(out)
    if start is None:  # a pretrained model without warm-start: TRL reloads the reference by its name
        if model is None:
            model, tokenizer = build_model(cfg, task.texts)
            _give_template(tokenizer, cfg)
    else:
        model, tokenizer = load_model(start, dtype=_weights_dtype(cfg))
        model.config._name_or_path = str(start / "model")
        if cfg.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer, warm


def _described_model(cfg: GRPOConfig, task: Task) -> Any:
    """The model config ``cfg`` describes (a tiny model is built to read it: it costs milliseconds)."""
    if cfg.model_name_or_path == "tiny":
        return build_model(cfg, task.texts)[0].config
    from transformers import AutoConfig

    path = Path(cfg.model_name_or_path)
    return AutoConfig.from_pretrained(path / "model" if (path / "model").is_dir() else cfg.model_name_or_path)


def _give_template(tokenizer: Any, cfg: GRPOConfig) -> None:
    """Store the chat template the episodes are rendered with in the tokenizer (saved with every checkpoint)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = ChatFormat(tokenizer, chat_template=cfg.chat_template).template


def _context_limit(cfg: GRPOConfig, model: Any) -> int:
    """Tokens of a whole episode at most (prompt and completion): the model's context."""
    return int(model.config.max_position_embeddings)


def copy_stage(cfg: GRPOConfig, model: Any, tokenizer: Any) -> dict[str, float]:
    """Copy pre-training (``copy_pretrain_*`` settings) on random whole words of the tokenizer's vocabulary;
    ``copy_pretrain/…`` metrics."""
    import re

    from accelerate import PartialState

    from .copy_pretrain import copy_pretrain

    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    words = [i for i, w in enumerate(vocab) if w and i not in special and re.fullmatch(r"\w+", w)]
    model.to(PartialState().device)
    try:
        return copy_pretrain(
            model,
            words,
            steps=cfg.copy_pretrain_steps,
            batch_size=cfg.copy_pretrain_batch_size,
            length=cfg.copy_pretrain_length,
            min_length=cfg.copy_pretrain_min_length,
            stop_accuracy=cfg.copy_pretrain_stop_accuracy,
            learning_rate=cfg.copy_pretrain_learning_rate,
            seed=cfg.seed,
            max_grad_norm=float(cfg.max_grad_norm),
        )
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    finally:
        model.to("cpu")


def warm_start(cfg: GRPOConfig, model: Any, tokenizer: Any, task: Task) -> dict[str, float]:
    """Supervised warm-start on the scripted agent's episodes (``warmstart_*`` settings); ``warmstart/…``
    metrics. The one entry point of the stage: a stage before it goes before this call."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from drgym.agent import agent_class
    from drgym.services import ToolServices

    from .warmstart import collect_teacher_passes, supervised_warmstart, teacher_passes

    model.to(PartialState().device)
    fmt = ChatFormat(tokenizer, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
    pool = task.train_indices
    passes = teacher_passes([pool[i] for i in _permutation(len(pool), cfg.seed + 1)], cfg.warmstart_episodes)
    with ToolServices() as services:
        envs = make_envs(task, min(64, len(passes[0])), services=services)
        try:
            demos, metrics = services.run(
                collect_teacher_passes(
                    envs,
                    agent_class(cfg.warmstart_agent),
                    cfg.warmstart_agent_kwargs,
                    passes,
                    fmt,
                    min_reward=cfg.warmstart_min_reward,
                    max_seq_length=_context_limit(cfg, model),
                    end_with_eos=cfg.warmstart_eos_after_answer,
                )
            )
        finally:
            for env in envs:
                env.close()
    bar = tqdm(total=cfg.warmstart_steps, desc="warm-start", disable=bool(cfg.disable_tqdm), leave=False)

    def progress(_: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    transform = None
    if cfg.warmstart_rename_entities:
        from drgym.llm.tiny_tokenizer import protocol_texts

        from .renaming import EntityRenamer

        transform = EntityRenamer.from_tokenizer(
            tokenizer, task.train_passages, reserved=[*protocol_texts(), cfg.system_prompt or ""], seed=cfg.seed
        )
    try:
        metrics |= supervised_warmstart(
            model, demos, cfg, pad_token_id=pad, autocast=contextlib.nullcontext, progress=progress,
            transform=transform,
        )
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    finally:
        bar.close()
    model.to("cpu")
    return metrics


def _permutation(n: int, seed: int) -> list[int]:
    import numpy as np

    return np.random.default_rng([seed, 29, 0]).permutation(n).tolist()


# ------------------------------------------------------------------------------------------------ eval


def evaluate(
    cfg: GRPOConfig, task: Task, envs: Sequence[Any], model: Any, tokenizer: Any, *, salt: int, services: Any
) -> dict[str, float]:
    """Greedy episodes on the held-out questions (``eval/…`` metrics: reward, F1, format-error rate ...), on
    ``envs`` built over ``services`` (a :class:`drgym.ToolServices`)."""
    from drgym.integrations._trl_rollout import RolloutTimes, TurnLimits, play_episodes
    from drgym.integrations.trl import STOP
    from drgym.llm.token_turns import HFGenerator

    if not task.eval_indices:
        return {}
    limits = TurnLimits(
        max_completion_length=int(cfg.max_completion_length),
        max_context=int(model.config.max_position_embeddings),
        max_turn_tokens=cfg.max_turn_tokens,
        temperature=0.0,
        top_p=1.0,
        top_k=0,
        seed=int(cfg.seed),
        reward_mode=cfg.reward_mode,
    )
    fmt = ChatFormat(tokenizer, system_prompt=cfg.system_prompt)
    episodes = services.run(
        play_episodes(
            envs,
            [{"index": i} for i in task.eval_indices],
            [task.records[i].answers for i in task.eval_indices],
            HFGenerator(model, tokenizer, stop=STOP),
            fmt,
            limits,
            salt=salt,
            times=RolloutTimes(),
        )
    )
    return episode_metrics(episodes, "eval")


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class DrgymCallback(_trainer_callback_base()):
    """``metrics.jsonl`` (the step's episodes, the held-out evaluation, TRL's logs), ``config.yaml`` beside
    every checkpoint, and the held-out greedy evaluation at step 0, every ``eval_steps`` and at the end.

    Every process plays its own share of the rollout; their episode metrics are gathered (a collective: TRL
    calls callbacks on every process) and the main process writes the file and plays the evaluation.
    """

    def __init__(self, cfg: GRPOConfig, task: Task, rollout: Any, warm: dict[str, float]) -> None:
        from accelerate import PartialState

        self.cfg, self.task, self.rollout, self.warm = cfg, task, rollout, warm
        self.trainer: Any = None
        self.main = PartialState().is_main_process
        self.metrics: MetricsLogger | None = None
        self._envs: list[Any] = []
        self._services: Any = None
        self._pending: dict[str, Any] = {}
        self._pending_step: int | None = None
        self._seen: Any = None
        self._step_started = 0.0
        self.rollout_seconds = 0.0
        """Seconds in TRL's ``_generate_and_score_completions`` since the last logged batch (see
        :func:`_time_rollouts`)."""

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        resumed = state.global_step > 0
        if self.main:
            self.metrics = MetricsLogger(
                Path(args.output_dir) / "metrics.jsonl", resume_step=state.global_step if resumed else None
            )
            from drgym.services import ToolServices

            self._services = ToolServices()
            self._envs = (
                make_envs(self.task, len(self.task.eval_indices), services=self._services)
                if self.task.eval_indices
                else []
            )
        if not resumed:
            first = dict(self.warm)
            first |= self._evaluate(state.global_step)
            if self.main and first:
                self.metrics.log(0, first)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step_seconds = time.perf_counter() - self._step_started
        self._flush()
        row: dict[str, Any] = {}
        if hasattr(self.rollout, "refresh"):  # environment_factory: the episodes are the trainer's envs'
            self.rollout.refresh(self.trainer)
        if self.rollout.episodes is not self._seen:  # a new generation batch was played for this step
            self._seen = self.rollout.episodes
            row |= self._rollout_metrics()
        row["charts/step_seconds"] = step_seconds
        step = state.global_step
        every = self.cfg.eval_steps
        if step >= state.max_steps or (every and step % every == 0):
            row |= self._evaluate(step)
        self._pending, self._pending_step = row, step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and self._pending_step == state.global_step:
            self._pending |= {f"trl/{k}": v for k, v in logs.items() if isinstance(v, (int, float))}

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.main:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.cfg.to_yaml(folder / CONFIG_FILE)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        for env in self._envs:
            env.close()
        self._envs = []
        if self._services is not None:
            self._services.close()
            self._services = None

    # ------------------------------------------------------------------ parts
    def _flush(self) -> None:
        if self.main and self.metrics is not None and self._pending_step is not None and self._pending:
            self.metrics.log(self._pending_step, self._pending)
        self._pending, self._pending_step = {}, None

    def _rollout_metrics(self) -> dict[str, Any]:
        from accelerate.utils import gather_object

        from .env_path import ToolEnvRollout, episode_rows

        episodes = gather_object(list(self.rollout.episodes))
        per_process = gather_object([len(self.rollout.episodes)])
        times = self.rollout.times
        tool_loop = isinstance(self.rollout, ToolEnvRollout)
        out = episode_rows(episodes) if tool_loop else episode_metrics(episodes)
        out |= {
            "charts/processes_with_episodes": float(sum(1 for n in per_process if n)),
            "charts/env_seconds": times.env_s,
            "charts/rollout_seconds": self.rollout_seconds,
            "charts/zero_std_groups": _zero_std_fraction([e.reward for e in episodes], int(self.cfg.num_generations)),
        }
        if not tool_loop:  # TRL's tool loop samples inside its own generate: not timed apart from the tools
            out["charts/generate_seconds"] = times.generate_s
        times.reset()
        self.rollout_seconds = 0.0
        return out

    def _evaluate(self, step: int) -> dict[str, float]:
        if not self.task.eval_indices or self.trainer is None:
            return {}
        from trl.models import unwrap_model_for_generation

        trainer = self.trainer
        # every process enters (ZeRO-3 gathers the weights collectively); the main one plays the episodes
        with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation
        ) as model:
            out = (
                evaluate(
                    self.cfg, self.task, self._envs, model, trainer.processing_class, salt=step,
                    services=self._services,
                )
                if self.main
                else {}
            )
        trainer.accelerator.wait_for_everyone()
        return out


def _time_rollouts(trainer: Any, callback: DrgymCallback) -> None:
    """Add the wall time of each generation batch (TRL's ``_generate_and_score_completions``: sampling, the
    tools, the rewards) to ``callback.rollout_seconds``, on both paths alike; the rest of a step is the update."""
    inner = trainer._generate_and_score_completions

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            callback.rollout_seconds += time.perf_counter() - started

    trainer._generate_and_score_completions = timed


def _zero_std_fraction(rewards: Sequence[float], group: int) -> float:
    """Fraction of groups whose rewards are all equal (they carry no learning signal).

    TRL's sampler gives each process whole groups (``num_generations`` consecutive completions of one prompt).
    """
    groups = [rewards[i : i + group] for i in range(0, len(rewards), group)]
    return sum(1.0 for g in groups if len(set(g)) == 1) / max(1, len(groups))


# ------------------------------------------------------------------------------------------------ run


def make_trainer(cfg: GRPOConfig, *, resume: bool = False, generator: Any = None) -> tuple[Any, DrgymCallback]:
    """Steps 1-3: the task, the policy (warm-started), and ``trl.GRPOTrainer`` driven by drgym's episodes.

    ``generator`` samples the turns instead of the trainer's model or vLLM engine (a
    :class:`drgym.llm.token_turns.Generator`, e.g. a client of a separate inference server, or a scripted
    policy in tests).
    """
    from transformers.trainer_callback import PrinterCallback

    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out)
    if resume and ckpt is None:
        raise ConfigError(f"--resume: there is no checkpoint in {out} to resume from")
    if not resume and ckpt is not None:
        raise ConfigError(
            f"output_dir {out} already holds checkpoints; pass --resume to continue that run, or choose another "
            "output_dir"
        )
    if generator is not None and cfg.rollout_path == "environment_factory":
        raise ConfigError(
            "a generator samples the rollout_func path's turns; with rollout_path environment_factory TRL "
            "generates with the trainer's model (or vLLM)"
        )
    # 1. task, tokenizer, model; 2. the warm-start (inside, on the main process)
    task = build_task(cfg)
    if ckpt is not None:  # the settings must describe the model the checkpoint holds
        check_architecture(ckpt, _described_model(cfg, task))
    model, tokenizer, warm = build_policy(cfg, task, resuming=ckpt is not None)
    if cfg.rollout_path == "environment_factory":
        trainer, callback = _tool_loop_trainer(cfg, task, model, tokenizer, warm)
    else:  # 3. TRL's trainer, its rollouts whole drgym episodes
        trainer, callback = _rollout_func_trainer(cfg, task, model, tokenizer, warm, generator)
    trainer.remove_callback(PrinterCallback)  # stdout carries the summary; every log is in metrics.jsonl
    callback.trainer = trainer
    _time_rollouts(trainer, callback)
    return trainer, callback


def _rollout_func_trainer(
    cfg: GRPOConfig, task: Task, model: Any, tokenizer: Any, warm: dict[str, float], generator: Any
) -> tuple[Any, DrgymCallback]:
    from trl import GRPOTrainer

    from drgym.integrations.trl import make_rollout_func, rollout_reward

    rollout = make_rollout_func(
        dataset=task.records,
        system_prompt=cfg.system_prompt,
        max_turn_tokens=cfg.max_turn_tokens,
        generator=generator,
        **task.env_kwargs,
    )
    callback = DrgymCallback(cfg, task, rollout, warm)
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=[rollout_reward],
        args=cfg.trl_args(),
        train_dataset=train_dataset(task),
        rollout_func=rollout,
        callbacks=[callback],
    )
    return trainer, callback


def _tool_loop_trainer(
    cfg: GRPOConfig, task: Task, model: Any, tokenizer: Any, warm: dict[str, float]
) -> tuple[Any, DrgymCallback]:
    """``GRPOTrainer(environment_factory=WebResearchToolEnv...)``: TRL's tool loop plays the episodes
    (agents/grpo/env_path.py)."""
    from trl import GRPOTrainer

    from drgym.integrations.trl import finish_episodes

    from .env_path import ToolEnvRollout, env_system_prompt, prepare_tokenizer, tool_env_trl_args

    prepare_tokenizer(tokenizer, cfg)  # the template is saved with every checkpoint
    rollout = ToolEnvRollout(task)
    callback = DrgymCallback(cfg, task, rollout, warm)
    try:
        trainer = GRPOTrainer(
            model=model,
            processing_class=tokenizer,
            reward_funcs=[finish_episodes],  # hands each env the last turn; TRL adds the env's get_reward
            args=tool_env_trl_args(cfg),
            train_dataset=train_dataset(task, system_prompt=env_system_prompt(cfg, task)),
            environment_factory=rollout.factory,
            callbacks=[callback],
        )
        rollout.trainer = trainer
    except ValueError as exc:
        rollout.close()
        if "chat template" in str(exc).lower() or "response" in str(exc).lower():
            raise ConfigError(
                f"rollout_path environment_factory: TRL cannot parse tool calls with this tokenizer's chat "
                f"template ({exc}); set chat_template to one TRL knows (e.g. Qwen2.5's), or use rollout_path "
                "rollout_func"
            ) from exc
        raise
    return trainer, callback


def train(cfg: GRPOConfig, *, resume: bool = False, generator: Any = None) -> dict[str, Any]:
    """Train (see the module docstring); ``resume`` continues from the newest checkpoint of ``output_dir``."""
    trainer, callback = make_trainer(cfg, resume=resume, generator=generator)
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out) if resume else None
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    finally:
        callback.rollout.close()  # the rollout's envs and the services they share
    # 4. final save (output_dir itself, with config.yaml) and the summary
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        cfg.to_yaml(out / CONFIG_FILE)
    trainer.accelerator.wait_for_everyone()
    plot = plot_curves(out / "metrics.jsonl", out / "curves.png") if cfg.plot and callback.main else None
    return _summary(trainer.state.global_step, out, latest_checkpoint(out), plot)


def _summary(steps: int, out: Path, checkpoint: Path | None, plot: Path | None) -> dict[str, Any]:
    rows = read_metrics(out / "metrics.jsonl")
    summary: dict[str, Any] = {
        "steps": steps,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "final": str(out),
        "plot": str(plot) if plot else None,
        "metrics": str(out / "metrics.jsonl"),
    }
    for name, prefix in (("train", "rollout"), ("eval", "eval")):
        table = [r for r in rows if f"{prefix}/reward_mean" in r]
        if table:
            for key in ("reward_mean", "f1", "format_error_rate"):
                summary[f"{name}_{key}_first"] = table[0].get(f"{prefix}/{key}")
                summary[f"{name}_{key}_last"] = table[-1].get(f"{prefix}/{key}")
    return summary


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """``--config``, ``--resume`` and one ``--<setting>`` per drgym setting and per ``trl.GRPOConfig`` field."""
    from .config import _trl_fields

    parser = argparse.ArgumentParser(
        prog="python -m agents.grpo.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --num_generation is a typo to name, not an abbreviation of two settings
    )
    parser.add_argument("--config", default=None, help="YAML file of settings (flags below override it)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of output_dir")
    parser.add_argument("--log-level", default="WARNING", help="logging level of the run")
    own = parser.add_argument_group("drgym settings (YAML syntax for values: 3, 1e-6, null, [a, b], {k: v})")
    for name in GRPOConfig.field_names():
        own.add_argument(f"--{name}", default=argparse.SUPPRESS, type=_yaml_value, metavar="VALUE",
                         help=GRPOConfig.help(name).replace("%", "%%"))
    trl = parser.add_argument_group("trl.GRPOConfig fields (TRL's names and meanings)")
    fields = _trl_fields()
    for name in trl_field_names():
        if name in GRPOConfig.field_names():
            continue
        text = str(fields[name].metadata.get("help", "")).split("\n")[0][:200]
        trl.add_argument(f"--{name}", default=argparse.SUPPRESS, type=_yaml_value, metavar="VALUE",
                         help=text.replace("%", "%%"))
    return parser


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the summary as JSON (on the main process)."""
    import json

    args, unknown = build_parser().parse_known_args(argv)
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import bm25s  # noqa: F401  # it sets its own logger to DEBUG when imported: import it, then level it

    logging.getLogger("bm25s").setLevel(level)
    try:
        if unknown:
            flag = next(u for u in unknown if u.startswith("--"))
            GRPOConfig.from_dict({flag[2:].split("=")[0]: None}, where="the command line")  # names the nearest
        overrides = {k: v for k, v in vars(args).items() if k not in ("config", "resume", "log_level")}
        for key in ("system_prompt", "chat_template", "output_dir", "model_name_or_path", "dataset"):
            if overrides.get(key) is not None and not isinstance(overrides[key], str):
                overrides[key] = str(overrides[key])
        cfg = (
            GRPOConfig.from_yaml(args.config, **overrides)
            if args.config
            else GRPOConfig.from_dict(overrides, where="the command line")
        )
        summary = train(cfg, resume=args.resume)
    except DrgymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
