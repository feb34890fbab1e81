"""Every setting of a GRPO run: drgym's own (model, task, warm-start, evaluation) as dataclass fields, and every
field of ``trl.GRPOConfig`` passed through with TRL's name, meaning and default.

A YAML file (or ``--<name> VALUE`` on the command line) mixes both kinds freely::

    num_generations: 4          # TRL's
    learning_rate: 1.0e-4       # TRL's
    max_turns: 3                # drgym's (an env option)
    warmstart_steps: 800        # drgym's

``cfg.trl_args()`` is the ``trl.GRPOConfig`` the trainer gets, and ``cfg.<trl field>`` reads its value (after
TRL's own ``__post_init__``). An unknown name is an error naming the nearest known one; a name the bundled agent
used before it trained on TRL says what replaced it.
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

__all__ = ["RETIRED", "ROLLOUT_PATHS", "TRL_DEFAULTS", "GRPOConfig", "trl_field_names"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_TINY_VOCABS = ("byt5", "word")
ROLLOUT_PATHS = ("rollout_func", "environment_factory")

TRL_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/grpo",
    "seed": 0,
    "max_steps": 100,
    "save_steps": 50,
    "logging_steps": 1,
    "report_to": "none",
    "lr_scheduler_type": "constant",
    "bf16": False,
}
"""drgym's defaults for a few TRL fields (TRL's own are for long GPU runs: 42, -1 steps, linear decay...)."""

RETIRED: dict[str, str] = {
    "prompts_per_step": "TRL batches completions, not questions: questions per optimizer step = "
    "per_device_train_batch_size x gradient_accumulation_steps x processes / num_generations",
    "generation_backend": "use_vllm: true (and vllm_mode: colocate or server) generates with TRL's vLLM engine",
    "max_seq_length": "max_completion_length (TRL's meaning: all completion tokens of an episode, the policy's "
    "and the tools') and max_turn_tokens (new tokens per turn)",
    "max_decode_batch": "remove it: a process decodes its whole generation batch together",
    "device": "use_cpu: true for the CPU; the GPUs come from accelerate launch",
    "old_logprobs": "remove it: TRL recomputes old log-probs when it needs them (num_iterations > 1 or "
    "steps_per_generation > gradient_accumulation_steps); vllm_importance_sampling_correction uses the sampler's",
    "advantage_epsilon": "remove it: TRL divides by (std + 1e-4); scale_rewards chooses the std",
    "max_nonfinite_steps": "remove it: TRL's trainer has no such counter",
    "stop": "remove it: a turn ends at the protocol's closing tags (drgym.integrations.trl.STOP) or EOS",
    "vllm_kwargs": "TRL's vllm_* fields (vllm_gpu_memory_utilization, vllm_tensor_parallel_size, ...)",
    "progress_bar": "disable_tqdm",
    "max_prompt_length": "remove it: trl 1.16 has no such field; a prompt and its episode fit the model's context "
    "(max_position_embeddings), the completion max_completion_length",
}
"""Settings of the bundled agent's own trainer that TRL's replaced, and what to write instead."""


def _f(default: Any, help: str) -> Any:  # `help` reads best at the call sites
    """A dataclass field with an immutable default and its one documentation string."""
    return field(default=default, metadata={"help": help})


def trl_field_names() -> list[str]:
    """The fields of ``trl.GRPOConfig`` (each a setting here, with TRL's meaning)."""
    return list(_trl_fields())


def _trl_fields() -> dict[str, dataclasses.Field]:
    from drgym.integrations._trl_version import require_trl

    require_trl()
    from trl import GRPOConfig as TRLConfig

    return {f.name: f for f in dataclasses.fields(TRLConfig) if f.init}


@dataclass
class GRPOConfig:
    """Settings of a GRPO run: ``GRPOConfig.from_dict({...})`` or ``from_yaml(path)`` (TRL's fields go in
    ``trl``, drgym's are attributes; ``cfg.<name>`` reads either)."""

    # ---------------------------------------------------------------- model
    model_name_or_path: str = _f(
        "tiny",
        '"tiny" (a random tiny Qwen2, tokenizer per tiny_vocab: no download), a HF causal LM name or path, or a '
        "directory a run saved (a checkpoint-N, a run's final save, or its warmstart/) to start from.",
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
    model_dtype: str = _f(
        "auto", 'Weights dtype: "auto" (float32 on CPU, bfloat16 on CUDA), "float32", "bfloat16".'
    )
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
    synthetic_name_pool: int | None = _f(
        None,
        "Synthetic ring task: town names are two words, each from a pool of this many, every pair used once, so "
        "every word recurs and a held-out town is a new pair of seen words (null: one invented word per town).",
    )
    synthetic_value_pool: int | None = _f(
        None,
        "Synthetic ring task: populations drawn from this many distinct values, each recurring across towns "
        "(null: any value in 200-99,999).",
    )
    search: str = _f("local", "Search backend name (the synthetic task always uses its own local corpus).")
    corpus: str | None = _f(None, "Corpus of the local search backend (default: the dataset's).")
    max_turns: int = _f(10, "Policy turns per episode (paper: 10, so at most 9 tool calls and an answer).")
    results_per_query: int = _f(10, "Search results per query (paper: 10).")
    reward_mode: str = _f("paper", '"paper" (-1 on a broken format, else F1) or another drgym reward mode.')

    max_turn_tokens: int | None = _f(
        None,
        "New tokens one policy turn may sample at most (paper: 2000); null: what is left of the episode's "
        "max_completion_length (TRL's field: every completion token of an episode, the tools' included).",
    )

    rollout_path: str = _f(
        "rollout_func",
        'How TRL plays the episodes: "rollout_func" (drgym plays whole episodes token-in/token-out with its '
        "own protocol and stop tags, all episodes of a batch at once; drgym.integrations.trl.make_rollout_func) "
        'or "environment_factory" (TRL\'s own tool loop renders the turns with the chat template, parses the '
        "tool calls and calls WebResearchToolEnv's tools one sample after another; a turn ends at EOS or "
        "max_turn_tokens). The warm-start and the held-out evaluation are the same on both.",
    )
    tool_schemas_in_prompt: bool = _f(
        True,
        "environment_factory only: let the chat template write the tools' JSON schemas into the system turn (TRL's "
        "way, and Qwen2.5's template). false renders the prompt as the warm-start and the rollout_func path do "
        "(the system prompt alone: Qwen2.5's template without its tool block, the same ids as drgym's ChatML), "
        "TRL still parsing Qwen-style tool calls; it needs the tiny model's template (or Qwen2.5's).",
    )

    # ---------------------------------------------------------------- copy pre-training (before the warm-start)
    copy_pretrain_steps: int = _f(
        0,
        "Steps of copy pre-training before the warm-start (0: none): random words, then the same words again, "
        "the loss on the repeat (agents/grpo/copy_pretrain.py), so a model from scratch can copy before it "
        "imitates.",
    )
    copy_pretrain_length: int = _f(32, "Random words per copy pre-training sequence (each is then repeated).")
    copy_pretrain_min_length: int | None = _f(
        None,
        "Draw each copy pre-training step's length in [copy_pretrain_min_length, copy_pretrain_length], after a "
        "random lead-in, so the repeat stands at no fixed offset and only an induction head (content matching) "
        "predicts it: the copy a search result's value needs. None: every sequence is copy_pretrain_length "
        "words (a positional copy).",
    )
    copy_pretrain_stop_accuracy: float | None = _f(
        None,
        "End the copy pre-training once its greedy copy accuracy (mean of the last 10 steps) reaches this, so "
        "copy_pretrain_steps is a ceiling: how long a tiny model sits on the induction plateau depends on the "
        "seed. None: always run copy_pretrain_steps.",
    )
    copy_pretrain_batch_size: int = _f(32, "Sequences per copy pre-training step.")
    copy_pretrain_learning_rate: float = _f(3e-3, "Learning rate of the copy pre-training.")

    # ---------------------------------------------------------------- supervised warm-start
    warmstart_steps: int = _f(0, "Supervised steps on scripted-agent episodes before RL (0: none).")
    warmstart_episodes: int = _f(
        256,
        "Scripted episodes played to collect the warm-start demonstrations. More than the training questions: "
        "the questions are played again, each pass with the agent's seed moved on, so a noisy teacher's "
        "spread of answers to one question is what is imitated (agents/grpo/warmstart.py, teacher_passes).",
    )
    warmstart_min_reward: float = _f(1.0, "Keep only demonstrations whose reward is at least this.")
    warmstart_learning_rate: float = _f(1e-3, "Learning rate of the warm-start.")
    warmstart_batch_size: int = _f(8, "Demonstrations per warm-start step.")
    warmstart_env_loss_weight: float = _f(
        0.0,
        "Weight of the environment's tokens (tool responses) in the warm-start cross-entropy, against 1 for "
        "the policy's: modelling the env's text (which repeats the query, titles and names) is where a small "
        "model from scratch learns to copy. 0: the policy's tokens only. RL never trains on env tokens.",
    )
    warmstart_rename_entities: bool = _f(
        False,
        "Redraw the names and numbers of each demonstration at random every time it is drawn, the same "
        "replacement wherever a word occurs (agents/grpo/renaming.py): memorising the training answers then "
        "lowers the loss no more, only copying does. Needs the tiny model's word tokenizer and the synthetic "
        "task.",
    )
    warmstart_eos_after_answer: bool = _f(
        False,
        "End each demonstration's last policy turn (its answer) with the tokenizer's EOS, in the loss. TRL's tool "
        "loop (rollout_path environment_factory) ends a turn at EOS only; without it, a warm-started policy "
        "writes on past </answer> and breaks the format. The rollout_func path stops a turn at </answer> and "
        "never samples it.",
    )
    warmstart_agent: str = _f("scripted", "Agent (drgym.agent name) that plays the demonstrations.")
    warmstart_agent_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Arguments of the warm-start agent."}
    )

    # ---------------------------------------------------------------- evaluation and outputs
    eval_steps: int = _f(
        0,
        "Score the held-out questions every this many steps (0: at the start and the end only). drgym's, not "
        "TRL's eval_steps: the evaluation plays whole greedy episodes (TRL's eval_strategy stays \"no\").",
    )
    plot: bool = _f(True, "Write <output_dir>/curves.png (reward and F1 per step) at the end.")

    # ---------------------------------------------------------------- TRL
    trl: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "trl.GRPOConfig fields set by this config (any TRL field is also a top-level setting)."},
    )

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()
        self.trl = {**TRL_DEFAULTS, **self.trl}
        self._trl_cache: Any = None
        self.trl_args()  # TRL checks its own fields now, not when training starts

    # ------------------------------------------------------------------ TRL's fields
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "trl":
            raise AttributeError(name)
        if name in _trl_fields():
            return getattr(self.trl_args(), name)
        raise AttributeError(f"GRPOConfig has no setting {name!r}")

    def trl_args(self, **overrides: Any) -> Any:
        """The ``trl.GRPOConfig`` of this run (``overrides`` win; without them it is built once)."""
        from trl import GRPOConfig as TRLConfig

        if self._trl_cache is not None and not overrides:
            return self._trl_cache
        values = {**self.trl, **overrides}
        try:
            args = TRLConfig(**values)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"trl.GRPOConfig refused these settings: {exc}") from exc
        if not overrides:
            self._trl_cache = args
        return args

    # ------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of drgym's own settings, in declaration order (TRL's: :func:`trl_field_names`)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "trl"]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "config") -> GRPOConfig:
        """Build from a flat mapping of drgym and TRL settings; an unknown key raises ``ConfigError`` naming it
        (with the nearest known name), a retired one says what replaced it."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping of settings, got {type(values).__name__}")
        own, trl_fields = cls.field_names(), _trl_fields()
        mine: dict[str, Any] = {}
        trl: dict[str, Any] = dict(values.get("trl") or {})
        for key, value in values.items():
            if key == "trl":
                continue
            if key in own:
                mine[key] = value
            elif key in trl_fields:
                trl[key] = _coerce(value, trl_fields[key])
            elif key in RETIRED:
                raise ConfigError(f"setting `{key}` in {where} is retired (the trainer is TRL's): {RETIRED[key]}")
            else:
                close = difflib.get_close_matches(str(key), own + list(trl_fields), n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise ConfigError(f"unknown setting `{key}` in {where} (neither drgym's nor trl.GRPOConfig's).{hint}")
        for key in trl:
            if key not in trl_fields:
                raise ConfigError(f"unknown trl.GRPOConfig field `{key}` in {where}")
        return cls(**mine, trl=trl)

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

    def replace(self, **changes: Any) -> GRPOConfig:
        """A copy with some drgym or TRL settings changed."""
        return type(self).from_dict({**self.to_dict(), **changes}, where="replace()")

    def to_dict(self) -> dict[str, Any]:
        """One flat mapping of plain values (drgym's settings, then the TRL fields this config sets)."""
        out = {name: getattr(self, name) for name in self.field_names()}
        return {**out, **self.trl}

    def to_yaml(self, path: str | Path) -> None:
        """Write the settings as YAML (what a checkpoint stores, beside TRL's own files)."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GRPOConfig) and self.to_dict() == other.to_dict()

    @classmethod
    def help(cls, name: str) -> str:
        """The documentation of one setting (drgym's or TRL's)."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.metadata["help"]
        return str(_trl_fields()[name].metadata.get("help", ""))

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
        _choice("model_dtype", self.model_dtype, _DTYPES)
        _choice("tiny_vocab", self.tiny_vocab, _TINY_VOCABS)
        _choice("rollout_path", self.rollout_path, ROLLOUT_PATHS)
        from drgym.reward import REWARD_MODES

        _choice("reward_mode", self.reward_mode, REWARD_MODES)
        for name in ("max_turns", "results_per_query", "warmstart_batch_size", "warmstart_episodes"):
            _at_least(name, getattr(self, name), 1)
        for name in ("num_eval_questions", "eval_steps", "warmstart_steps", "copy_pretrain_steps"):
            _at_least(name, getattr(self, name), 0)
        for name in ("copy_pretrain_batch_size", "copy_pretrain_length"):
            _at_least(name, getattr(self, name), 1 if name.endswith("size") else 2)
        if self.copy_pretrain_min_length is not None and not (
            2 <= self.copy_pretrain_min_length <= self.copy_pretrain_length
        ):
            raise ConfigError(
                f"`copy_pretrain_min_length` must be in [2, copy_pretrain_length={self.copy_pretrain_length}], "
                f"got {self.copy_pretrain_min_length!r}"
            )
        if self.copy_pretrain_stop_accuracy is not None and not 0 < self.copy_pretrain_stop_accuracy <= 1:
            raise ConfigError(
                f"`copy_pretrain_stop_accuracy` must be in (0, 1], got {self.copy_pretrain_stop_accuracy!r}"
            )
        if not self.copy_pretrain_learning_rate > 0:
            raise ConfigError(
                f"`copy_pretrain_learning_rate` must be > 0, got {self.copy_pretrain_learning_rate!r}"
            )
        if self.warmstart_rename_entities and not (
            self.model_name_or_path == "tiny" and self.tiny_vocab == "word" and self.dataset == "synthetic"
        ):
            raise ConfigError(
                "`warmstart_rename_entities` renames word ids: it needs model_name_or_path tiny, tiny_vocab word "
                f"and dataset synthetic (got {self.model_name_or_path!r}, {self.tiny_vocab!r}, {self.dataset!r})"
            )
        for name in ("num_train_questions", "max_turn_tokens"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        if not self.warmstart_learning_rate > 0:
            raise ConfigError(f"`warmstart_learning_rate` must be > 0, got {self.warmstart_learning_rate!r}")
        if not self.warmstart_env_loss_weight >= 0:
            raise ConfigError(
                f"`warmstart_env_loss_weight` must be >= 0, got {self.warmstart_env_loss_weight!r}"
            )
        if not 0 <= self.two_hop_fraction <= 1:
            raise ConfigError(f"`two_hop_fraction` must be in [0, 1], got {self.two_hop_fraction!r}")
        if self.dataset != "synthetic" and (
            self.two_hop_fraction
            or self.synthetic_kinds is not None
            or self.synthetic_entities is not None
            or self.synthetic_neighbours
            or self.synthetic_name_pool is not None
            or self.synthetic_value_pool is not None
        ):
            raise ConfigError(
                "`two_hop_fraction`, `synthetic_kinds`, `synthetic_entities`, `synthetic_neighbours`, "
                "`synthetic_name_pool` and `synthetic_value_pool` only apply to dataset: synthetic; remove them"
            )


def _coerce(value: Any, trl_field: dataclasses.Field) -> Any:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string: a float where TRL's default is a float."""
    if isinstance(value, str) and isinstance(trl_field.default, float):
        return _float_or_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and isinstance(trl_field.default, float):
        return float(value)
    return value


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
