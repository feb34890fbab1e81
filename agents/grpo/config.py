"""Every GRPO setting in one dataclass: documented once (the ``help`` of each field, also the ``--help``
text),
loadable from YAML, checked in ``__post_init__`` with messages that name the field and what to change.

Names follow TRL's ``GRPOConfig`` where one exists (``num_generations``, ``beta``, ``epsilon``,
``max_completion_length``, ``per_device_train_batch_size`` ...), so users of TRL find their way.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drgym.errors import ConfigError

__all__ = ["LOSS_TYPES", "SCHEDULERS", "GRPOConfig"]

LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo")  # TRL's values, TRL's meanings (agents.grpo.losses.aggregate)
SCHEDULERS = ("constant", "linear", "cosine")
_BACKENDS = ("hf", "vllm")
_OLD_LOGPROBS = ("recompute", "sampling")
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_TINY_VOCABS = ("byt5", "word")
_RENAMED_VALUES = {
    ("loss_type", "token_mean"): "dapo",
    ("loss_type", "seq_mean"): "grpo",
}


def _f(default: Any, help: str) -> Any:  # `help` reads best at the call sites
    """A dataclass field with an immutable default and its one documentation string."""
    return field(default=default, metadata={"help": help})


@dataclass
class GRPOConfig:
    """Settings of a GRPO run (see each field's help): ``GRPOConfig(...)`` or ``from_yaml(path)``."""

    # ---------------------------------------------------------------- model
    model_name_or_path: str = _f(
        "tiny",
        '"tiny" (a random tiny Qwen2, tokenizer per tiny_vocab: no download), a HF causal LM name or path, or a '
        "drgym checkpoint directory (model/ and tokenizer/ inside, e.g. a run's warmstart/) to start from.",
    )
    tiny_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Overrides of the tiny model's Qwen2 config (e.g. hidden_size: 128)."},
    )
    tiny_vocab: str = _f(
        "byt5",
        'Tokenizer of the tiny model: "byt5" (bytes) or "word" (word-level, trained at start on the task\'s '
        "questions and corpus: one id per word, so copying a name or a number is copying one token).",
    )
    freeze_embeddings: bool = _f(
        False,
        "Keep the token embeddings (and a tied output head) fixed. Under Adam, the rows of tokens never seen in "
        "training all drift the same way, so a small model cannot tell apart (or copy) names it has not "
        "trained on; frozen random rows stay distinct. Pair with tiny_config: {embedding_std: 1.0}.",
    )
    device: str = _f("auto", '"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...')
    model_dtype: str = _f(
        "auto", 'Weights dtype: "auto" (float32 on CPU, bfloat16 on CUDA), "float32", "bfloat16".'
    )
    bf16: bool = _f(False, "Run forward/backward under bfloat16 autocast (CUDA with bf16 support only).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    chat_template: str | None = _f(
        None,
        "A Jinja chat template replacing the tokenizer's (default: its own, or "
        "Qwen2.5-style ChatML when it has none).",
    )
    system_prompt: str | None = _f(
        None, "System prompt given to the policy; null keeps the env's (the paper's)."
    )

    # ---------------------------------------------------------------- task
    dataset: str = _f("synthetic", '"synthetic" (drgym.data.synthetic, offline) or a drgym dataset name.')
    data_source: list[str] | None = field(
        default=None, metadata={"help": "Keep only these data sources of the dataset (e.g. [nq, hotpotqa])."}
    )
    num_train_questions: int | None = _f(
        None, "Training questions (synthetic: how many to generate; else a limit; null: all)."
    )
    num_eval_questions: int = _f(0, "Held-out questions scored greedily before, during and after training.")
    two_hop_fraction: float = _f(0.0, "Synthetic task: fraction of questions that need two searches.")
    synthetic_kinds: list[str] | None = field(
        default=None,
        metadata={"help": "Synthetic task: one-hop question kinds to draw from (null: all; e.g. [founder, "
                  "founding_year, river, population, birthplace, birth_year, trade])."},
    )
    synthetic_entities: int | None = _f(
        None,
        "Synthetic task: draw the one-hop questions from a fixed pool of this many towns and people (several "
        "facts asked of each), so held-out questions name entities seen in training (null: a new entity per "
        "question).",
    )
    synthetic_neighbours: bool = _f(
        False,
        "Synthetic task: towns on a ring, each passage naming its two neighbours, so every search returns the "
        "asked town's passage and its neighbours', each with a value of the asked kind (one right, the others "
        "candidates to tell apart); a new town per question.",
    )
    search: str = _f("local", "Search backend name (the synthetic task always uses its own local corpus).")
    corpus: str | None = _f(None, "Corpus of the local search backend (default: the dataset's).")
    max_turns: int = _f(10, "Policy turns per episode (paper: 10, so at most 9 tool calls and an answer).")
    results_per_query: int = _f(10, "Search results per query (paper: 10).")
    reward_mode: str = _f("paper", '"paper" (-1 on a broken format, else F1) or another drgym reward mode.')

    # ---------------------------------------------------------------- rollouts
    prompts_per_step: int = _f(
        256, "Questions per step; a step plays prompts_per_step x num_generations episodes (paper: 256 x 16)."
    )
    num_generations: int = _f(
        16, "Episodes per question (the group G whose rewards are normalised together)."
    )
    temperature: float = _f(1.0, "Sampling temperature of rollouts (also divides the logits in the loss).")
    top_p: float = _f(1.0, "Nucleus sampling mass of rollouts (1: off).")
    top_k: int = _f(0, "Top-k sampling of rollouts (0: off).")
    max_completion_length: int = _f(2000, "New tokens per policy turn at most (paper: 2000).")
    max_prompt_length: int = _f(
        4096,
        "Tokens of the first prompt (system + question) at most; longer "
        "questions end their episode with the format reward.",
    )
    max_seq_length: int = _f(
        32768,
        "Tokens of a whole episode at most (paper: 32k); an episode that would "
        "exceed it ends truncated with the no-answer reward.",
    )
    stop: list[str] = field(
        default_factory=lambda: ["</tool_call>", "</answer>"],
        metadata={"help": "Strings that end a policy turn (besides EOS)."},
    )
    generation_backend: str = _f(
        "hf", '"hf" (in-process transformers) or "vllm" (GPU; weights synced after each update).'
    )
    generation_batch_size: int | None = _f(
        None,
        "Episodes generated per rollout batch, TRL's meaning: here prompts_per_step x num_generations; null "
        "derives it, a number must equal that product (the error says which prompts_per_step gives it).",
    )
    max_decode_batch: int = _f(
        64, "HF backend: sequences decoded together at most (a memory bound; the rollout batch is split)."
    )
    vllm_gpu_memory_utilization: float = _f(0.3, "vLLM backend: fraction of GPU memory for the engine.")
    vllm_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "vLLM backend: further vllm.LLM arguments."}
    )

    # ---------------------------------------------------------------- update
    learning_rate: float = _f(1e-6, "AdamW learning rate (paper: 1e-6, constant).")
    lr_scheduler_type: str = _f(
        "constant", 'Learning-rate schedule after warmup: "constant", "linear", "cosine".'
    )
    warmup_steps: int = _f(0, "Optimizer steps of linear learning-rate warmup.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    epsilon: float = _f(0.2, "PPO clip range of the probability ratio (paper: 0.2).")
    beta: float = _f(
        0.001,
        "KL coefficient against the frozen reference, k3 estimator (paper: 0.001); 0 builds "
        "no reference model.",
    )
    entropy_coef: float = _f(0.001, "Entropy bonus coefficient (paper: 0.001).")
    advantage_epsilon: float = _f(1e-6, "Added to the group std: advantage = (r - mean) / (std + this).")
    loss_type: str = _f(
        "dapo",
        "TRL's loss_type, with TRL's normalisation: \"dapo\" (TRL's default) divides the token sum by the policy "
        "tokens of the whole optimizer step (every token weighs the same); \"grpo\" averages each episode's "
        "tokens, then the episodes of each micro-batch (original GRPO); \"bnpo\" the token mean of each "
        "micro-batch; \"dr_grpo\" the token sum over micro-batch episodes x max_completion_length. bnpo, grpo "
        "and dr_grpo are then divided by the micro-batches per optimizer step.",
    )
    num_iterations: int = _f(
        1, "Passes over each rollout batch (paper: 1, so the ratio is 1 on the first pass)."
    )
    old_logprobs: str = _f(
        "recompute",
        '"recompute": old log-probs from the policy before the update (same '
        'numerics as the loss); "sampling": those the sampler reported.',
    )
    per_device_train_batch_size: int = _f(4, "Episodes per forward/backward micro-batch.")
    gradient_accumulation_steps: int | None = _f(
        None, "Micro-batches per optimizer step; null: the whole rollout batch in one optimizer step (paper)."
    )
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (paper: 1.0); 0 disables clipping.")
    max_nonfinite_steps: int = _f(
        3, "Consecutive steps with a NaN/inf loss or gradient (each skipped) before the run stops."
    )

    # ---------------------------------------------------------------- supervised warm-start
    warmstart_steps: int = _f(0, "Supervised steps on scripted-agent episodes before RL (0: none).")
    warmstart_episodes: int = _f(256, "Scripted episodes played to collect the warm-start demonstrations.")
    warmstart_min_reward: float = _f(1.0, "Keep only demonstrations whose reward is at least this.")
    warmstart_learning_rate: float = _f(1e-3, "Learning rate of the warm-start.")
    warmstart_batch_size: int = _f(8, "Demonstrations per warm-start step.")
    warmstart_env_loss_weight: float = _f(
        0.0,
        "Weight of the environment's tokens (tool responses) in the warm-start cross-entropy, against 1 for "
        "the policy's: modelling the env's text (which repeats the query, titles and names) is where a small "
        "model from scratch learns to copy. 0: the policy's tokens only. RL never trains on env tokens.",
    )
    warmstart_agent: str = _f("scripted", "Agent (drgym.agent name) that plays the demonstrations.")
    warmstart_agent_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Arguments of the warm-start agent."}
    )

    # ---------------------------------------------------------------- run
    max_steps: int = _f(100, "GRPO steps (each: rollouts, then the update).")
    save_steps: int = _f(50, "Write a checkpoint every this many steps (and at the end).")
    save_total_limit: int | None = _f(None, "Keep only the newest checkpoints (null: all).")
    eval_steps: int = _f(0, "Score the held-out questions every this many steps (0: at start and end only).")
    output_dir: str = _f("runs/grpo", "Where checkpoints, metrics.jsonl and curves.png go.")
    logging_dir: str | None = _f(None, "TensorBoard event directory (default: <output_dir>/tensorboard).")
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={
            "help": "Metric sinks besides <output_dir>/metrics.jsonl (always written): "
            '"tensorboard", or [] for none.'
        },
    )
    plot: bool = _f(True, "Write curves.png (reward and F1 per step) at the end.")
    progress_bar: bool = _f(True, "Show a tqdm progress bar.")
    seed: int = _f(
        0, "Seed of the tiny model's weights, the data order, the synthetic task and every sample."
    )

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()

    # ------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every setting, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> GRPOConfig:
        """Build from a mapping; an unknown key raises ``ConfigError`` naming it (with a suggestion)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping of settings, got {type(values).__name__}")
        names = cls.field_names()
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise ConfigError(f"unknown setting `{key}` in {where}.{hint}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> GRPOConfig:
        """Load a YAML file of settings; ``overrides`` win over the file."""
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path} is not readable YAML: {exc}") from exc
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of settings, got {type(values).__name__}"
            )
        return cls.from_dict({**values, **overrides}, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready for YAML/JSON."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        """Write the settings as YAML (what a checkpoint stores)."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def help(cls, name: str) -> str:
        """The documentation of one setting."""
        return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)

    # ------------------------------------------------------------------ derived
    @property
    def rollout_batch_size(self) -> int:
        """Episodes per step: ``prompts_per_step * num_generations``."""
        return self.prompts_per_step * self.num_generations

    @property
    def micro_batches_per_optimizer_step(self) -> int:
        """Micro-batches accumulated into one optimizer step."""
        if self.gradient_accumulation_steps is None:
            return -(-self.rollout_batch_size // self.per_device_train_batch_size)
        return self.gradient_accumulation_steps

    # ------------------------------------------------------------------ validation
    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and _is_float(hints[f.name]):
                value = _float_or_text(value)  # YAML 1.1 reads 1e-6 (no dot) as a string
                setattr(self, f.name, value)
            if not _matches(value, hints[f.name]):
                want = str(f.type).replace("typing.", "")
                raise ConfigError(
                    f"`{f.name}` must be {want}, got {value!r} ({type(value).__name__}). "
                    f"{f.name}: {f.metadata['help']}"
                )
            if isinstance(value, int) and not isinstance(value, bool) and _is_float(hints[f.name]):
                setattr(self, f.name, float(value))  # YAML writes 1 for 1.0

    def _check_values(self) -> None:
        new = _RENAMED_VALUES.get(("loss_type", self.loss_type))
        if new is not None:
            raise ConfigError(
                f"`loss_type` {self.loss_type!r} is now TRL's {new!r} (loss_type takes TRL's values with TRL's "
                f"meanings: {', '.join(map(repr, LOSS_TYPES))}); set loss_type: {new}"
            )
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        _choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _choice("generation_backend", self.generation_backend, _BACKENDS)
        _choice("old_logprobs", self.old_logprobs, _OLD_LOGPROBS)
        _choice("model_dtype", self.model_dtype, _DTYPES)
        _choice("tiny_vocab", self.tiny_vocab, _TINY_VOCABS)
        from drgym.reward import REWARD_MODES

        _choice("reward_mode", self.reward_mode, REWARD_MODES)
        for name in (
            "prompts_per_step",
            "max_turns",
            "results_per_query",
            "max_completion_length",
            "max_prompt_length",
            "max_seq_length",
            "max_decode_batch",
            "num_iterations",
            "per_device_train_batch_size",
            "max_steps",
            "save_steps",
            "max_nonfinite_steps",
            "warmstart_batch_size",
            "warmstart_episodes",
        ):
            _at_least(name, getattr(self, name), 1)
        for name in ("num_eval_questions", "warmup_steps", "eval_steps", "warmstart_steps"):
            _at_least(name, getattr(self, name), 0)
        for name in ("gradient_accumulation_steps", "save_total_limit", "num_train_questions"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        if self.num_generations < 2:
            raise ConfigError(
                "GRPO needs at least 2 generations per question to normalise rewards within a group; "
                f"`num_generations` is {self.num_generations}. Set num_generations to 2 or more."
            )
        for name in ("learning_rate", "adam_epsilon", "advantage_epsilon", "warmstart_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)!r}")
        for name in ("beta", "entropy_coef", "weight_decay", "max_grad_norm", "warmstart_env_loss_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.epsilon < 1:
            raise ConfigError(f"`epsilon` (the PPO clip range) must be in (0, 1), got {self.epsilon!r}")
        if not 0 <= self.temperature <= 100:
            raise ConfigError(f"`temperature` must be in [0, 100], got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"`top_p` must be in (0, 1], got {self.top_p!r}")
        if self.top_k < 0:
            raise ConfigError(f"`top_k` must be >= 0 (0: off), got {self.top_k!r}")
        if not 0 <= self.two_hop_fraction <= 1:
            raise ConfigError(f"`two_hop_fraction` must be in [0, 1], got {self.two_hop_fraction!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ConfigError(
                f"`vllm_gpu_memory_utilization` must be in (0, 1], got {self.vllm_gpu_memory_utilization!r}"
            )
        if self.max_prompt_length >= self.max_seq_length:
            raise ConfigError(
                f"`max_prompt_length` ({self.max_prompt_length}) must be below `max_seq_length` "
                f"({self.max_seq_length}) to leave room for the policy's turns; lower it or raise "
                "max_seq_length."
            )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"`stop` must be a list of non-empty strings, got {self.stop!r}")
        unknown = [r for r in self.report_to if r != "tensorboard"]
        if unknown:
            raise ConfigError(
                f'`report_to` accepts only "tensorboard" (metrics.jsonl is always written), got {unknown}'
            )
        self._check_batching()
        self._check_generation_batch()
        if self.dataset != "synthetic" and (
            self.two_hop_fraction
            or self.synthetic_kinds is not None
            or self.synthetic_entities is not None
            or self.synthetic_neighbours
        ):
            raise ConfigError(
                "`two_hop_fraction`, `synthetic_kinds`, `synthetic_entities` and `synthetic_neighbours` only "
                "apply to dataset: synthetic; remove them"
            )

    def _check_generation_batch(self) -> None:
        if self.generation_batch_size is None:
            return
        _at_least("generation_batch_size", self.generation_batch_size, 1)
        if self.generation_batch_size != self.rollout_batch_size:
            prompts, rest = divmod(self.generation_batch_size, self.num_generations)
            fix = (
                f"set prompts_per_step: {prompts}"
                if not rest and prompts
                else f"make it a multiple of num_generations ({self.num_generations})"
            )
            raise ConfigError(
                f"`generation_batch_size` ({self.generation_batch_size}) is TRL's: the episodes of one rollout "
                f"batch, prompts_per_step x num_generations ({self.prompts_per_step} x {self.num_generations} = "
                f"{self.rollout_batch_size}) here; {fix}, or remove it. The decoding chunk is max_decode_batch."
            )

    def _check_batching(self) -> None:
        if self.gradient_accumulation_steps is None:
            return
        per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.rollout_batch_size % per_step:
            raise ConfigError(
                f"the rollout batch (prompts_per_step x num_generations = {self.rollout_batch_size} "
                "episodes) must split into whole optimizer steps of per_device_train_batch_size x "
                f"gradient_accumulation_steps = {per_step} episodes; change gradient_accumulation_steps (or "
                "null: one optimizer step per batch)"
            )


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a simple annotation (``int``, ``str | None``, ``list[str]``, ``dict``)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _float_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _is_float(hint: Any) -> bool:
    return hint is float or float in typing.get_args(hint)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.{hint}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"`{name}` must be >= {low}, got {value!r}")
