"""The ``environment_factory`` path of the bundled trainer (``rollout_path: environment_factory``).

TRL's own tool loop plays the episodes: it renders the prompt with the tokenizer's chat template (the tool
schemas go into the system turn), samples each turn until EOS (or ``max_turn_tokens``, passed as
``generation_kwargs.max_new_tokens``), parses the tool calls with its response template, and awaits each
sample's tools one sample after another on :class:`drgym.integrations.trl.WebResearchToolEnv` envs that share
one :class:`drgym.ToolServices`. ``finish_episodes`` hands each env the policy's last turn and TRL adds the
env's ``get_reward`` as the reward. :class:`ToolEnvRollout` reads the step's episodes back from
``trainer.environments`` in the shape :class:`agents.grpo.train.DrgymCallback` logs for the rollout_func path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drgym.errors import ConfigError

if TYPE_CHECKING:
    from drgym.integrations._trl_rollout import EpisodeTokens

    from .config import GRPOConfig
    from .rollout import Task

__all__ = [
    "ToolEnvRollout",
    "compare_layouts",
    "env_system_prompt",
    "episode_rows",
    "prepare_tokenizer",
    "qwen2_5_without_schemas",
    "tool_env_trl_args",
    "trl_episode_ids",
]


def prepare_tokenizer(tokenizer: Any, cfg: GRPOConfig) -> None:
    """Give the tokenizer the chat template TRL's tool loop renders with, and a tool-call parser.

    TRL parses tool calls only for chat templates it knows (``trl.chat_template_utils.add_response_schema``).
    The tiny model's tokenizer carries drgym's ChatML (:data:`drgym.llm.CHATML_TEMPLATE`); Qwen2.5's own template
    renders every message of a drgym episode to the same ids (tests/grpo/test_env_path.py checks it on a
    warm-start demonstration) and writes the tool schemas into the system turn, so it replaces it. With
    ``tool_schemas_in_prompt: false`` the tokenizer keeps Qwen2.5's parser but renders with
    :func:`qwen2_5_without_schemas` (no schemas: the warm-start's prompt). Any other template (a pretrained model's, or ``chat_template``) is kept.

    Raises:
        ConfigError: ``tool_schemas_in_prompt: false`` with a template other than the two above.
    """
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    from drgym.llm.local import CHATML_TEMPLATE

    current = getattr(tokenizer, "chat_template", None)
    known = (None, CHATML_TEMPLATE, qwen2_5_chat_template, qwen2_5_without_schemas())
    ours = cfg.chat_template is None and current in known
    if ours:
        tokenizer.chat_template = qwen2_5_chat_template
    if cfg.tool_schemas_in_prompt:
        return
    if not ours:
        raise ConfigError(
            "`tool_schemas_in_prompt: false` renders with drgym's ChatML and parses Qwen2.5's tool calls: it needs "
            "the tiny model's chat template or Qwen2.5's, not this tokenizer's (or chat_template's); remove the "
            "setting"
        )
    add_response_schema(tokenizer)  # Qwen's tool-call parser, chosen while the template is Qwen's
    tokenizer.chat_template = qwen2_5_without_schemas()


def qwen2_5_without_schemas() -> str:
    """Qwen2.5's chat template with its tool-schema block cut out: it renders tool calls and tool turns (TRL
    checks that a template can), and a system turn that is the system prompt alone, whatever ``tools`` holds."""
    from trl.chat_template_utils import qwen2_5_chat_template

    head = "{%- if tools %}"
    if qwen2_5_chat_template.count(head) != 1 or not qwen2_5_chat_template.startswith(head):
        raise ConfigError("trl's Qwen2.5 chat template changed: tool_schemas_in_prompt false cannot cut its tool block")
    return "{%- if false %}" + qwen2_5_chat_template[len(head) :]


def env_system_prompt(cfg: GRPOConfig, task: Task) -> str:
    """The system prompt the env's episodes open with (the run's, else the env's own): TRL's prompt has to
    carry it, since TRL renders the prompt itself."""
    if cfg.system_prompt is not None:
        return cfg.system_prompt
    from .rollout import make_envs

    (env,) = make_envs(task, 1)
    try:
        return env.reset(options={"index": task.train_indices[0]})[1]["system_prompt"]
    finally:
        env.close()


def tool_env_trl_args(cfg: GRPOConfig) -> Any:
    """``cfg.trl_args()`` with what TRL's tool loop needs from drgym's settings: at most ``max_turns - 1`` tool
    rounds (the env's last turn must answer), and ``max_turn_tokens`` new tokens per turn."""
    overrides: dict[str, Any] = {}
    if cfg.trl.get("max_tool_calling_iterations") is None:
        overrides["max_tool_calling_iterations"] = max(0, cfg.max_turns - 1)
    if cfg.max_turn_tokens is not None:
        kwargs = dict(cfg.trl.get("generation_kwargs") or {})
        kwargs.setdefault("max_new_tokens", cfg.max_turn_tokens)
        overrides["generation_kwargs"] = kwargs
    return cfg.trl_args(**overrides)


class ToolEnvRollout:
    """The envs of the environment_factory path and what :class:`DrgymCallback` reads of them.

    ``factory`` is the ``environment_factory`` (every env over the task's records, sharing ``services``).
    After each step, :meth:`refresh` reads the trainer's ``environments``; ``episodes`` is a new list when
    they played a new generation batch (the callback logs a batch once), else the same list.

    Attributes:
        episodes: The last batch's episodes as :class:`EpisodeTokens` (no token ids: TRL keeps those; its
            ``completions/mean_length`` says how long they were).
        times: ``env_s`` is the search backends' seconds of the last batches (TRL runs the tools one sample
            after another, so it adds up); ``generate_s`` is not measured on this path (0).
    """

    def __init__(self, task: Task) -> None:
        from drgym.integrations._trl_rollout import RolloutTimes
        from drgym.integrations.trl import WebResearchToolEnv
        from drgym.services import ToolServices

        self.services = ToolServices()
        self.factory = functools.partial(
            WebResearchToolEnv, dataset=task.records, **task.env_kwargs, services=self.services
        )
        self.episodes: list[EpisodeTokens] = []
        self.times = RolloutTimes()
        self._marker: tuple[int, ...] = ()
        self.trainer: Any = None

    def refresh(self, trainer: Any) -> None:
        """Read the episodes the trainer's envs played last (a no-op when they played no new batch)."""
        self.trainer = trainer
        envs = [e for e in (getattr(trainer, "environments", None) or []) if getattr(e, "env", None) is not None]
        marker = tuple(id(e.env._episode) for e in envs)
        if not envs or marker == self._marker:
            return
        self._marker = marker
        self.episodes = [_episode_of(e) for e in envs]
        self.times.env_s += sum(float(e.env._episode.backend_time_s) for e in envs)
        self.times.calls += 1
        self.times.episodes += len(envs)

    def close(self) -> None:
        """Close every env the trainer made from ``factory`` and the services they share."""
        pools = getattr(self.trainer, "_environment_pool", None) or {}
        for pool in pools.values():
            for env in pool:
                env.env.close()
        self.services.close()


def _episode_of(tool_env: Any) -> EpisodeTokens:
    """One env's last episode in the rollout_func path's terms: the env's reward (what TRL trained on), and
    F1 and the format verdict scored from the policy's turns as the env recorded them."""
    from drgym.integrations._trl_rollout import EpisodeTokens
    from drgym.reward import score_episode

    ep = tool_env.env._episode
    golds = list(tool_env._golds or ep.record.answers)
    turns = [m["content"] for m in ep.messages if m["role"] == "assistant"]
    score = score_episode(turns, golds, tool_env.env.reward_mode, max_chars=tool_env.env.max_action_chars)
    try:
        reward = float(tool_env.get_reward())
    except ConfigError:  # never finished (no finish_episodes): the score of the turns it has
        reward = float(score.reward)
    return EpisodeTokens(
        prompt_ids=[],
        answers=golds,
        turns=turns,
        reward=reward,
        f1=float(score.f1),
        format_ok=bool(score.format_ok),
        tool_calls=int(ep.tool_calls),
        cut=not ep.done,
    )


def episode_rows(episodes: Sequence[EpisodeTokens]) -> dict[str, float]:
    """:func:`agents.grpo.metrics.episode_metrics` without the token counts this path does not see."""
    from .metrics import episode_metrics

    out = episode_metrics(episodes)
    for key in ("rollout/response_tokens", "rollout/sequence_tokens"):
        out.pop(key, None)
    return out


# ------------------------------------------------------------------------------------------ token layouts


def trl_episode_ids(trainer: Any, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Ids and loss mask of a recorded drgym episode (system, user, then assistant and tool turns) as TRL's
    tool loop builds them: its prompt (with the tool schemas), each policy turn's ids and the EOS that ends it
    (sampled: mask 1), and TRL's own tool-turn ids (``_get_tool_suffix_ids``: mask 0)."""
    tokenizer = trainer.processing_class
    prompt = trainer.processing_class.apply_chat_template(
        conversation=[list(messages[:2])],
        tools=trainer._env_tools[None] or None,
        chat_template=trainer.chat_template,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"][0]
    ids, mask = list(prompt), [0] * len(prompt)
    for message in messages[2:]:
        if message["role"] == "assistant":
            piece = tokenizer(message["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids, mask = ids + piece, mask + [1] * len(piece)
        else:
            tool = {"role": "tool", "name": "web_search", "content": message["content"]}
            piece = trainer._get_tool_suffix_ids([tool])
            ids, mask = ids + piece, mask + [0] * len(piece)
    return ids, mask


def compare_layouts(warm: tuple[list[int], list[int]], trl: tuple[list[int], list[int]]) -> dict[str, Any]:
    """Where the warm-start's ids of an episode and TRL's ids of the same episode differ.

    ``prompt_extra`` is how many more prompt ids TRL's has (its tool schemas); ``same_after_prompt`` whether the
    rest is the same ids once TRL's end-of-turn EOS tokens are set aside; ``eos_added`` the EOS ids TRL's has
    and the warm-start's has not (the last turn's: the warm-start's ends at the closing tag);
    ``policy_mask_differs`` how many ids are the policy's in one layout and not the other.
    """
    (w_ids, w_mask), (t_ids, t_mask) = warm, trl
    w_prompt, t_prompt = w_mask.index(1), t_mask.index(1)
    w_rest, t_rest = w_ids[w_prompt:], t_ids[t_prompt:]
    return {
        "warmstart_ids": len(w_ids),
        "trl_ids": len(t_ids),
        "warmstart_prompt_ids": w_prompt,
        "trl_prompt_ids": t_prompt,
        "prompt_extra": t_prompt - w_prompt,
        "same_after_prompt": _strip_trailing(t_rest, w_rest),
        "eos_added": len(t_rest) - len(w_rest),
        "policy_mask_differs": sum(a != b for a, b in zip(w_mask[w_prompt:], t_mask[t_prompt:])),
    }


def _strip_trailing(longer: list[int], shorter: list[int]) -> bool:
    return longer[: len(shorter)] == shorter and len(longer) - len(shorter) <= 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.grpo.env_path --config F.yaml``: one scripted warm-start episode of the config's task,
    as the warm-start tokenises it and as TRL's tool loop would (:func:`compare_layouts`, then both decoded)."""
    import argparse
    import asyncio
    import json
    import tempfile

    from drgym.agent import make_agent

    from .checkpoint import build_model
    from .config import GRPOConfig
    from .rollout import ChatFormat, build_task, make_envs
    from .train import make_trainer
    from .warmstart import _play

    parser = argparse.ArgumentParser(prog="python -m agents.grpo.env_path", description=main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--tool_schemas_in_prompt", default="true", choices=("true", "false"))
    parser.add_argument("--checkpoint", default=None,
                        help="a run's saved policy (e.g. its warmstart/): also show its greedy first turn after each prompt")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig.from_yaml(
            args.config, rollout_path="environment_factory", warmstart_steps=0, copy_pretrain_steps=0,
            output_dir=tmp, tool_schemas_in_prompt=args.tool_schemas_in_prompt == "true",
        )
        task = build_task(cfg)
        _, warm_tokenizer = build_model(cfg, task.texts)
        (env,) = make_envs(task, 1)
        agent = make_agent(cfg.warmstart_agent, **cfg.warmstart_agent_kwargs)
        messages, _ = asyncio.run(_play(env, agent, task.train_indices[0]))
        env.close()
        warm_fmt = ChatFormat(warm_tokenizer, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
        messages = warm_fmt.messages(messages)
        warm = warm_fmt.episode_ids(messages)
        trainer, callback = make_trainer(cfg)
        trl = trl_episode_ids(trainer, messages)
        callback.rollout.close()
    print(json.dumps(compare_layouts(warm, trl), indent=1))
    decode = trainer.processing_class.decode
    print("--- warm-start\n" + decode(warm[0]) + "\n--- TRL's tool loop\n" + decode(trl[0]))
    if args.checkpoint:
        import torch

        from .checkpoint import load_model

        model, tokenizer = load_model(args.checkpoint)
        for name, (ids, mask) in (("warm-start", warm), ("TRL's tool loop", trl)):
            prompt = torch.tensor([ids[: mask.index(1)]])
            out = model.generate(prompt, max_new_tokens=cfg.max_turn_tokens or 64, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            print(f"--- {args.checkpoint}, greedy first turn after the {name} prompt ({prompt.shape[1]} ids)")
            print(tokenizer.decode(out[0, prompt.shape[1] :].tolist()))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
