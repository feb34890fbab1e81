"""Side-by-side benchmark: every agent on every question, through the batched runner, with a report.

Run ``python -m benchmarks.run --help`` (or ``drgym bench --help``). With no arguments it runs the agents
that need no LLM on the local BM25 backend over the offline question sets whose passages are in the local
corpus, 100 questions per data source, into ``runs/bench``; agents that need an LLM are skipped, and it says
why.

Resumable: each finished episode is appended to ``OUT/trajectories/<agent>.jsonl`` and flushed at once, so
a crash loses at most the episodes in flight; the same command run again skips the questions already done
(a torn last line is dropped) and rebuilds the report from all of them. Outputs: ``OUT/trajectories/``,
``OUT/scores.json``, ``OUT/report.md``, ``OUT/report.png`` and ``OUT/judge_cache.sqlite`` (MBE verdicts).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as _dt
import difflib
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from drgym.errors import ConfigError, DrgymError

__all__ = [
    "DEFAULT_DATASETS",
    "BenchConfig",
    "BenchResult",
    "DatasetPlan",
    "TrajectoryStore",
    "arun_bench",
    "main",
    "parse_args",
    "plan_questions",
    "run_bench",
    "select_agents",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASETS = ("hotpotqa-dev500", "musique-dev100", "popqa-1000")
"""Offline question sets whose supporting passages are in the local ``wiki-local`` corpus."""

_ENV_ID = "drgym/WebResearch-v0"
_LIVE_ENV_ID = "drgym/WebResearchLive-v0"
_OFFLINE_SEARCH = frozenset({"local", "replay", "miniweb"})

_HOW_TO_PROVIDE = {
    "llm": "an LLM (--llm openai:URL --model NAME)",
    "checkpoint": "a trained checkpoint (--checkpoint DIR)",
}


# ------------------------------------------------------------------------------------------------ config


def _opt(help: str, **argparse_kwargs: Any) -> Any:
    """A config field's default and its ``--help`` text, kept together (one place per fact)."""
    default = argparse_kwargs.pop("default", None)
    return field(default=default, metadata={"help": help, "argparse": argparse_kwargs})


def _limit(text: str) -> int | None:
    if text.strip().lower() in ("all", "none", "0"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


@dataclass
class BenchConfig:
    """What to run and where to write it. Each field is a ``--flag`` (underscores become dashes)."""

    agents: str | None = _opt("comma-separated agent names; default: every agent the options let run")
    datasets: str = _opt(
        "comma-separated dataset names (see `drgym data list`)", default=",".join(DEFAULT_DATASETS)
    )
    sources: str | None = _opt("comma-separated data sources to keep (e.g. nq,bamboogle); default: all")
    limit: int | None = _opt(
        "questions per data source of each dataset ('all' for every question)", default=100, type=_limit
    )
    search: str = _opt(
        "search backend passed to the env (local, miniweb, serper, replay, ...)", default="local"
    )
    corpus: str | None = _opt("corpus of the local backend (default: the env's choice for the dataset)")
    search_arg: tuple[str, ...] = _opt(
        "search backend argument KEY=VALUE (JSON value or string); repeatable",
        default=(),
        action="append",
        metavar="KEY=VALUE",
    )
    env_arg: tuple[str, ...] = _opt(
        "extra env argument KEY=VALUE (JSON value or string); repeatable",
        default=(),
        action="append",
        metavar="KEY=VALUE",
    )
    max_turns: int = _opt("policy turns per episode (paper: 10)", default=10, type=int)
    llm: str | None = _opt("LLM for the LLM agents: openai:URL | hf:PATH | vllm:NAME | tiny")
    model: str | None = _opt("model name served at --llm")
    checkpoint: str | None = _opt("checkpoint directory of the trained (grpo) agent")
    agent_arg: tuple[str, ...] = _opt(
        "agent constructor argument AGENT.KEY=VALUE (JSON value or string); repeatable",
        default=(),
        action="append",
        metavar="AGENT.KEY=VALUE",
    )
    judge: str | None = _opt(
        "judge endpoint for MBE, e.g. openai:https://api.openai.com/v1; "
        "without it MBE is reported as not computed"
    )
    judge_model: str | None = _opt("judge model name (the paper used gpt-4o-mini)")
    judge_attempts: int = _opt(
        "judge requests per answer before an unreadable reply is a judge failure", default=3, type=int
    )
    judge_concurrency: int = _opt("judge requests in flight at once", default=8, type=int)
    concurrency: int = _opt("episodes in flight at once, per agent", default=8, type=int)
    out: str = _opt("output folder (trajectories, scores.json, report.md, report.png)", default="runs/bench")
    retry_failed: bool = _opt(
        "re-run questions whose recorded episode crashed (default: keep them as failures)",
        default=False,
        action="store_true",
    )
    resamples: int = _opt("bootstrap resamples per table cell", default=1000, type=int)
    confidence: float = _opt("confidence level of the bootstrap intervals", default=0.95, type=float)
    seed: int = _opt("bootstrap seed", default=0, type=int)
    no_progress: bool = _opt("hide the progress bars", default=False, action="store_true")
    no_plot: bool = _opt("do not draw report.png", default=False, action="store_true")
    verbose: bool = _opt("log at INFO level to stderr", default=False, action="store_true")

    def __post_init__(self) -> None:
        for name in ("search_arg", "env_arg", "agent_arg"):  # argparse gives a list (or None) for "append"
            setattr(self, name, tuple(getattr(self, name) or ()))
        for name in ("concurrency", "judge_attempts", "judge_concurrency", "max_turns", "resamples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(
                f"--confidence must be strictly between 0 and 1 (e.g. 0.95), got {self.confidence!r}"
            )
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"--limit must be a positive integer or None (all), got {self.limit!r}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has a telling one (not None, False or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, ()):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser, generated from :class:`BenchConfig`'s fields."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="The same command runs as `drgym bench ...`.",
        formatter_class=_HelpFormatter,
    )
    for f in dataclasses.fields(BenchConfig):
        kwargs = dict(f.metadata["argparse"])
        default = None if kwargs.get("action") == "append" else f.default
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, default=default, help=f.metadata["help"], **kwargs
        )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """Parse command-line arguments into a validated :class:`BenchConfig`."""
    namespace = build_parser().parse_args(list(argv) if argv is not None else None)
    return BenchConfig(**vars(namespace))


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# ------------------------------------------------------------------------------------------------ agents


@dataclass
class _AgentPool:
    """Builds agents for the batched runner and hands finished ones out again, so that running several
    datasets one after the other builds at most ``concurrency`` agents in all (some load models).

    The agents share what the pool holds: one LLM client built from an ``llm`` spec (closed with the pool),
    and the run's ``ToolServices`` for agents that take ``services`` (kept out of ``kwargs``, which are the
    recorded settings)."""

    name: str
    kwargs: dict[str, Any]
    services: Any = None
    created: list[Any] = field(default_factory=list)
    free: list[Any] = field(default_factory=list)
    env_options: dict[str, Any] = field(default_factory=dict)
    _client: Any = None
    _built_kwargs: dict[str, Any] | None = None

    def _make(self) -> Any:
        from drgym.agent import agent_class, make_agent

        if self._built_kwargs is None:
            from drgym.agents.prompt_baseline.llm import shared_client

            built = dict(self.kwargs)
            self._client = shared_client(built)
            if self.services is not None and "services" in getattr(agent_class(self.name), "run_options", ()):
                built["services"] = self.services
            self._built_kwargs = built
        return make_agent(self.name, **self._built_kwargs)

    def prime(self) -> Any:
        """Build the first agent now (errors surface before any episode) and read its env options."""
        agent = self._make()
        self.env_options = dict(getattr(agent, "env_options", {}) or {})
        self.created.append(agent)
        self.free.append(agent)
        return agent

    def new_round(self) -> None:
        self.free = list(self.created)

    def __call__(self) -> Any:
        if self.free:
            return self.free.pop()
        agent = self._make()
        self.created.append(agent)
        return agent

    async def aclose(self) -> None:
        """Close every agent built (those with ``aclose``/``close``); safe to call twice."""
        agents, self.created, self.free = self.created, [], []
        for agent in agents:
            closer = getattr(agent, "aclose", None) or getattr(agent, "close", None)
            if closer is None:
                continue
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001  # closing one agent must not hide the run's results
                logger.warning("closing agent %s failed: %s", self.name, exc)
        client, self._client, self._built_kwargs = self._client, None, None
        if client is not None:
            from drgym.agents.prompt_baseline.llm import close_client

            await close_client(client)


def _missing_requirement(name: str, config: BenchConfig) -> str | None:
    """Why the agent cannot run with these options (``requires_one_of`` unmet), or None."""
    from drgym.agent import agent_class

    needs = tuple(getattr(agent_class(name), "requires_one_of", ()))
    if not needs or any(getattr(config, option, None) for option in needs):
        return None
    return "needs " + " or ".join(_HOW_TO_PROVIDE.get(n, f"--{n.replace('_', '-')}") for n in needs)


def _run_option(config: BenchConfig, option: str) -> Any:
    if option == "search_kwargs":
        return _key_values(config.search_arg, "--search-arg") if config.search_arg else None
    return getattr(config, option, None)


def _agent_kwargs(name: str, config: BenchConfig) -> dict[str, Any]:
    """The run-wide options the agent declares in ``run_options`` (those set), then its ``--agent-arg``s."""
    from drgym.agent import agent_class

    kwargs: dict[str, Any] = {}
    for option in getattr(agent_class(name), "run_options", ()):
        value = _run_option(config, option)
        if value:
            kwargs[option] = value
    for item in config.agent_arg:
        target, dot, rest = item.partition(".")
        if not dot or "=" not in rest or "=" in target:
            raise ConfigError(f"--agent-arg expects AGENT.KEY=VALUE, got {item!r}")
        if target == name:
            kwargs.update(_key_values([rest], "--agent-arg"))
    return kwargs


def select_agents(config: BenchConfig, services: Any = None) -> tuple[dict[str, _AgentPool], dict[str, str]]:
    """The agents to run (each built once, to fail fast) and those skipped, with the reason.

    Without ``--agents`` every known agent is tried and one that cannot run is skipped; an agent named
    explicitly that cannot run is an error.

    Raises:
        ConfigError: An unknown agent name (the message lists the valid ones), or a named agent that cannot
            run with the given options.
    """
    from drgym.agent import agent_names

    table = agent_names()  # built-in agents and those installed through the `drgym.agents` entry points
    explicit = config.agents is not None
    names = list(dict.fromkeys(_split(config.agents))) if explicit else list(table)
    if explicit and not names:
        raise ConfigError(f"--agents names no agent; valid agents: {', '.join(table)}")
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, table, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"unknown agent `{name}`; valid agents: {', '.join(table)}.{hint}")
    for item in config.agent_arg:
        target = item.partition(".")[0]
        if target not in table:
            raise ConfigError(
                f"--agent-arg {item!r} names unknown agent `{target}`; valid agents: {', '.join(table)}"
            )
    pools: dict[str, _AgentPool] = {}
    skipped: dict[str, str] = {}
    for name in names:
        reason = _missing_requirement(name, config)
        if reason is None:
            pool = _AgentPool(name, _agent_kwargs(name, config), services)
            try:
                pool.prime()
            except Exception as exc:  # noqa: BLE001  # any library may fail while building an agent
                reason = f"could not be built: {type(exc).__name__}: {exc}"
            else:
                pools[name] = pool
                continue
        if explicit:
            raise ConfigError(f"agent `{name}` {reason}")
        skipped[name] = reason
    return pools, skipped


# ------------------------------------------------------------------------------------------------ questions


@dataclass(frozen=True)
class DatasetPlan:
    """The questions of one dataset to play: dataset indices (reset options) and their record ids."""

    dataset: str
    indices: tuple[int, ...]
    record_ids: tuple[str, ...]
    sources: tuple[str, ...]


def plan_questions(
    datasets: Sequence[str], *, limit: int | None, sources: Sequence[str] | None = None
) -> list[DatasetPlan]:
    """Pick each dataset's questions: the first ``limit`` of each data source, in file order.

    Per source, not per dataset, so that ``--limit 100`` on a mixed set like ``deepresearcher-test`` gives
    100 of each source instead of whatever happens to come first.

    Raises:
        ConfigError: An unknown dataset (the message lists the valid ones), or data sources no dataset has.
    """
    from drgym.data import list_datasets, load_dataset
    from drgym.data.loaders import normalise_source

    valid = list_datasets()
    if not datasets:
        raise ConfigError(f"--datasets names no dataset; valid datasets: {', '.join(valid)}")
    for name in datasets:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"unknown dataset `{name}`; valid datasets: {', '.join(valid)}.{hint}")
    wanted = {normalise_source(s) for s in sources} if sources else None
    plans: list[DatasetPlan] = []
    seen_sources: set[str] = set()
    for name in dict.fromkeys(datasets):
        records = load_dataset(name)
        seen_sources.update(r.source for r in records)
        taken: dict[str, int] = {}
        picked: list[tuple[int, str, str]] = []
        for index, record in enumerate(records):
            if wanted is not None and record.source not in wanted:
                continue
            if limit is not None and taken.get(record.source, 0) >= limit:
                continue
            taken[record.source] = taken.get(record.source, 0) + 1
            picked.append((index, record.id, record.source))
        if picked:
            indices, ids, srcs = zip(*picked)
            plans.append(DatasetPlan(name, tuple(indices), tuple(ids), tuple(srcs)))
    if not plans:
        raise ConfigError(
            f"no question left: --sources {','.join(sources or [])} matches none of the data sources of "
            f"{', '.join(datasets)} ({', '.join(sorted(seen_sources))})"
        )
    return plans


# ------------------------------------------------------------------------------------------------ storage


def _open_for_append(path: Path) -> IO[str]:
    """Open a JSONL file for appending, first cutting a torn last line (a crash mid-write) away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as fh:
            data = fh.read()
            if not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                logger.warning("dropping a torn last line (%d bytes) of %s", len(data) - keep, path)
                fh.truncate(keep)
    return open(path, "a", encoding="utf-8")


def _slim(traj: Any) -> Any:
    """A trajectory without its texts (actions, observations): what scoring needs, in less memory."""
    turns = [dataclasses.replace(t, action="", observation="") for t in traj.turns]
    return dataclasses.replace(traj, turns=turns)


class TrajectoryStore:
    """One agent's finished episodes: a JSONL file appended to as each episode ends, and an in-memory index.

    Keys are ``(dataset, record_id)``; when a question was played again (``--retry-failed``) the last line
    wins. Texts are dropped from the in-memory copies (the file keeps them).
    """

    def __init__(self, path: str | Path) -> None:
        from drgym.runner import read_jsonl

        self.path = Path(path)
        self._latest: dict[tuple[str, str], Any] = {}
        self._fh: IO[str] | None = None
        if self.path.exists():
            self._fh = _open_for_append(self.path)  # cut a torn tail before reading
            for traj in read_jsonl(self.path):
                self._latest[self.key(traj)] = _slim(traj)

    @staticmethod
    def key(traj: Any) -> tuple[str, str]:
        """``(dataset, record_id)`` of a trajectory written by the benchmark."""
        return str(traj.metadata.get("dataset", "")), str(traj.record_id)

    def finished(self, *, retry_failed: bool = False) -> set[tuple[str, str]]:
        """Keys of the episodes that need no new run (crashed ones too, unless ``retry_failed``)."""
        return {k for k, t in self._latest.items() if not (retry_failed and t.error is not None)}

    def append(self, traj: Any) -> None:
        """Write one trajectory as a line and flush it to the OS at once."""
        if self._fh is None:
            self._fh = _open_for_append(self.path)
        self._fh.write(traj.to_json() + "\n")
        self._fh.flush()
        self._latest[self.key(traj)] = _slim(traj)

    def conflict(self, settings: dict[str, Any]) -> str | None:
        """How the settings of the stored episodes differ from ``settings`` (None when they match).

        Episodes played with another search backend, turn limit or model must not be mixed with new ones.
        """
        for traj in self._latest.values():
            old = traj.metadata.get("settings")
            if old is not None and old != settings:
                return _describe_difference(old, settings)
        return None

    def get(self, keys: Sequence[tuple[str, str]]) -> list[Any]:
        """The stored trajectories for ``keys``, in that order (keys never played are left out)."""
        return [self._latest[k] for k in keys if k in self._latest]

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    changes = []
    for part in sorted(set(old) | set(new)):
        before, after = old.get(part) or {}, new.get(part) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{part} {key}: {before.get(key)!r} then, {after.get(key)!r} now")
    return "; ".join(changes) or "different settings"


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "agent"


# ------------------------------------------------------------------------------------------------ running


@dataclass
class BenchResult:
    """What a run produced: the scores (``scores.json``'s content) and the files written."""

    scores: dict[str, Any]
    files: dict[str, Any]
    skipped: dict[str, str]
    episodes_run: int


def _env_kwargs(config: BenchConfig, dataset: str, agent_env_options: dict[str, Any]) -> dict[str, Any]:
    env_args = _key_values(config.env_arg, "--env-arg")
    if env_args.get("reward_mode", "paper") != "paper":
        raise ConfigError(
            "the benchmark scores episodes played with reward_mode='paper'; drop --env-arg reward_mode"
        )
    kwargs: dict[str, Any] = {"dataset": dataset, "search": config.search, "max_turns": config.max_turns}
    if config.corpus:
        kwargs["corpus"] = config.corpus
    search_kwargs = _key_values(config.search_arg, "--search-arg")
    if search_kwargs:
        kwargs["search_kwargs"] = search_kwargs
    return {**kwargs, **agent_env_options, **env_args, "reward_mode": "paper"}


def _settings(config: BenchConfig, pool: _AgentPool) -> dict[str, Any]:
    """What decides how an agent's episodes play out (not which questions): recorded with every episode."""
    env = _env_kwargs(config, "", pool.env_options)
    env.pop("dataset")
    # The form the settings have once stored as JSON (objects as their repr), so a resumed run compares like
    # with like; not a copy.
    return json.loads(json.dumps({"env": env, "agent": pool.kwargs}, sort_keys=True, default=repr))


def _env_factory(config: BenchConfig, kwargs: dict[str, Any], services: Any) -> Callable[[], Any]:
    import gymnasium as gym

    import drgym  # noqa: F401  (registers the env ids)

    env_id = _ENV_ID if config.search in _OFFLINE_SEARCH else _LIVE_ENV_ID

    def make() -> Any:
        return gym.make(env_id, disable_env_checker=True, services=services, **kwargs)

    return make


class _Primed:
    """A factory whose first product was built ahead (so a bad configuration fails before any episode)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._first: list[Any] = [factory()]

    def __call__(self) -> Any:
        return self._first.pop() if self._first else self._factory()

    def close_unused(self) -> None:
        for env in self._first:
            env.close()
        self._first.clear()


class _Recorder:
    """``on_done`` of the batched runner: labels each finished episode and appends it to the store at once."""

    def __init__(
        self, agent: str, plan: DatasetPlan, store: TrajectoryStore, settings: dict, bar: Any
    ) -> None:
        self.agent, self.dataset, self.store = agent, plan.dataset, store
        self.settings, self.bar = settings, bar
        self.ids = dict(zip(plan.indices, plan.record_ids))
        self.sources = dict(zip(plan.indices, plan.sources))
        self.played = 0

    def __call__(self, traj: Any) -> None:
        index = traj.metadata.get("options", {}).get("index")
        traj.agent = self.agent
        # A reset that failed leaves the trajectory without record id and source: fill them from the plan.
        traj.record_id = traj.record_id or self.ids.get(index, "")
        traj.source = traj.source or self.sources.get(index, "")
        traj.metadata["dataset"] = self.dataset
        traj.metadata["settings"] = self.settings
        self.store.append(traj)
        self.played += 1
        self.bar.update(1)


async def _run_agent(
    config: BenchConfig,
    name: str,
    pool: _AgentPool,
    plans: Sequence[DatasetPlan],
    store: TrajectoryStore,
    services: Any,
) -> int:
    """Play ``name`` on every planned question not yet in ``store``; returns the episodes played."""
    from tqdm.auto import tqdm

    from drgym.runner import arun_episodes

    done = store.finished(retry_failed=config.retry_failed)
    total = sum(len(p.indices) for p in plans)
    todo = {
        p.dataset: [(i, rid) for i, rid in zip(p.indices, p.record_ids) if (p.dataset, rid) not in done]
        for p in plans
    }
    played = 0
    env_options = pool.env_options
    settings = _settings(config, pool)
    bar = tqdm(
        total=total,
        initial=total - sum(map(len, todo.values())),
        desc=name,
        unit="ep",
        disable=True if config.no_progress else None,
        dynamic_ncols=True,
    )
    try:
        for plan in plans:
            work = todo[plan.dataset]
            if not work:
                continue
            factory = _env_factory(config, _env_kwargs(config, plan.dataset, env_options), services)
            make_env = await asyncio.to_thread(_Primed, factory)  # the first env may build a search index
            record = _Recorder(name, plan, store, settings, bar)
            pool.new_round()
            try:
                await arun_episodes(
                    make_env,
                    pool,
                    [{"index": i} for i, _ in work],
                    concurrency=config.concurrency,
                    on_done=record,
                )
            finally:
                played += record.played
                make_env.close_unused()
    finally:
        bar.close()
    return played


async def _judge(
    config: BenchConfig, client: Any, trajectories: dict[str, list[Any]], out: Path
) -> tuple[dict[str, list[Any]] | None, str | None, dict[str, Any]]:
    from .judge import Judge, JudgeUnavailable, VerdictCache
    from .metrics import score_trajectory

    if client is None:
        return None, "no judge configured (pass --judge openai:URL --judge-model NAME)", {}
    model = config.judge_model or str(config.judge)
    cache = VerdictCache(out / "judge_cache.sqlite")
    judge = Judge(
        client, model, cache=cache, max_attempts=config.judge_attempts, concurrency=config.judge_concurrency
    )
    verdicts: dict[str, list[Any]] = {}
    reason = None
    try:
        for name, trajs in trajectories.items():
            items = [
                (t.question, t.answers, t.answer if score_trajectory(t).format_ok else None) for t in trajs
            ]
            verdicts[name] = await judge.verdicts(items)
    except JudgeUnavailable as exc:
        reason = str(exc)
    finally:
        cache.close()
    stats = {"model": model, **judge.stats.to_dict()}
    return (None if reason else verdicts), reason, stats


def _meta(config: BenchConfig, plans: Sequence[DatasetPlan], argv: Sequence[str] | None) -> dict[str, Any]:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": "python -m benchmarks.run" + ("" if argv is None else " " + " ".join(argv)),
        "datasets": ", ".join(f"{p.dataset} ({len(p.indices)} questions)" for p in plans),
        "search": config.search + (f" (corpus {config.corpus})" if config.corpus else ""),
        "limit": f"{config.limit} per data source" if config.limit else "all questions",
        "max_turns": config.max_turns,
        "llm": " ".join(filter(None, [config.llm, config.model])) or None,
        "checkpoint": config.checkpoint,
        "judge": " ".join(filter(None, [config.judge, config.judge_model])) or None,
    }


async def arun_bench(
    config: BenchConfig, *, argv: Sequence[str] | None = None, echo: Callable[[str], None] | None = None
) -> BenchResult:
    """Run the benchmark on the running loop and write its report (see the module docstring).

    Cheap checks come first (names, question sets, the judge spec), then each agent is built once, so a bad
    configuration fails before any episode is played. ``echo`` receives progress notes (skipped agents).
    """
    from drgym.services import ToolServices

    from .report import build_scores, write_report

    plans = await asyncio.to_thread(
        plan_questions, _split(config.datasets), limit=config.limit, sources=_split(config.sources) or None
    )
    judge_client = None
    if config.judge:
        from drgym.llm import make_client

        judge_client = make_client(config.judge, model=config.judge_model)
    services = ToolServices()  # every env and agent of the run shares its indexes, limits, budgets and cache
    pools, skipped = select_agents(config, services)
    for name, reason in skipped.items():
        if echo is not None:
            echo(f"skipping agent {name}: {reason}")
    out = Path(config.out)
    (out / "trajectories").mkdir(parents=True, exist_ok=True)
    keys = [(p.dataset, rid) for p in plans for rid in p.record_ids]
    trajectories: dict[str, list[Any]] = {}
    played = 0
    started = time.perf_counter()
    stores = {name: TrajectoryStore(out / "trajectories" / f"{_safe_name(name)}.jsonl") for name in pools}
    try:
        for name, store in stores.items():
            conflict = store.conflict(_settings(config, pools[name]))
            if conflict is not None:
                raise ConfigError(
                    f"{store.path} holds episodes of agent `{name}` played with other settings ({conflict}); "
                    "pass another --out, or delete that file to start over"
                )
        for name, pool in pools.items():
            played += await _run_agent(config, name, pool, plans, stores[name], services)
            trajectories[name] = stores[name].get(keys)
            stores[name].close()
            await pool.aclose()
        verdicts, mbe_reason, judge_stats = await _judge(config, judge_client, trajectories, out)
    finally:
        for name, store in stores.items():
            store.close()
            await pools[name].aclose()
        if judge_client is not None and hasattr(judge_client, "aclose"):
            await judge_client.aclose()
        await services.aclose()
    meta = {
        **_meta(config, plans, argv),
        "episodes_played_now": played,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    scores = build_scores(
        trajectories,
        verdicts=verdicts,
        mbe_reason=mbe_reason,
        judge_stats=judge_stats,
        skipped=skipped,
        meta=meta,
        n_resamples=config.resamples,
        confidence=config.confidence,
        seed=config.seed,
    )
    files = await asyncio.to_thread(write_report, scores, out, plot=not config.no_plot)
    return BenchResult(scores=scores, files=files, skipped=skipped, episodes_run=played)


def run_bench(
    config: BenchConfig, *, argv: Sequence[str] | None = None, echo: Callable[[str], None] | None = None
) -> BenchResult:
    """Synchronous :func:`arun_bench` (its own event loop)."""
    return asyncio.run(arun_bench(config, argv=argv, echo=echo))


# ---------------------------------------------------------------------------------------------- command line


def _summary(result: BenchResult) -> list[str]:
    scores = result.scores
    lines = [] if scores["agents"] else ["no agent was run"]
    for name, agent in scores["agents"].items():
        avg = agent["scores"]["f1"].get("avg")
        f1 = "–"
        if avg is not None:
            f1 = f"{100 * avg['mean']:.1f} [{100 * avg['lo']:.1f}, {100 * avg['hi']:.1f}]"
        lines.append(
            f"{name:>12}: F1 {f1} over {agent['episodes']} episodes "
            f"({agent['failures']} crashed, {agent['format_failures']} format failures)"
        )
    if not scores["mbe"]["computed"]:
        lines.append(f"MBE not computed: {scores['mbe']['reason']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m benchmarks.run``, ``drgym bench``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse_args(argv)
    except ConfigError as exc:
        print(f"benchmarks.run: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if config.verbose else logging.WARNING, stream=sys.stderr)
    try:
        result = run_bench(config, argv=argv, echo=print)
    except DrgymError as exc:
        print(f"benchmarks.run: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished episodes are saved under {config.out}/trajectories; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    for line in _summary(result):
        print(line)
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
