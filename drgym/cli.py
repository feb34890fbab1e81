"""The ``drgym`` command: play an episode, query a search backend, manage data, run benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMAND_GROUP", "main"]


def _add_episode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("episode", help="play one episode and print it as JSON")
    p.add_argument("--dataset", default="demo", help="dataset name (see `drgym data list`)")
    p.add_argument("--data-source", default=None, help="keep only this data source (e.g. hotpotqa)")
    p.add_argument("--index", type=int, default=None, help="question index (default: a seeded draw)")
    p.add_argument("--question", default=None, help="ask this question instead of a dataset one")
    p.add_argument("--answers", default=None, help="gold answers for --question, joined by <|answer_split|>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agent", default="scripted", help="agent name (see `drgym agents`)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra agent constructor argument (JSON value or string); repeatable")
    p.add_argument("--search", default="local", help="search backend name")
    p.add_argument("--corpus", default=None, help="corpus of the local backend (default: by dataset)")
    p.add_argument("--max-turns", type=int, default=10)
    p.add_argument("--llm", default=None, help="LLM for LLM agents: openai:URL | hf:PATH | vllm:NAME | tiny")
    p.add_argument("--model", default=None, help="model name served at --llm")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (trained agents)")
    p.add_argument("--reader", default="lexical",
                   help="how pages are read: lexical (no LLM) or an LLM spec for the browsing agent, "
                        "e.g. openai:http://localhost:8000/v1")
    p.add_argument("--compact", action="store_true", help="one-line JSON")


def _agent_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in args.agent_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--agent-arg expects KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    for key in ("llm", "model", "checkpoint"):
        if getattr(args, key, None) is not None:
            kwargs[key] = getattr(args, key)
    return kwargs


def _cmd_episode(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import drgym  # noqa: F401  (registers the env ids)
    from drgym.agent import make_agent
    from drgym.runner import run_episode

    agent = make_agent(args.agent, **_agent_kwargs(args))
    env_kwargs: dict[str, Any] = {
        "dataset": args.dataset,
        "data_source": args.data_source,
        "search": args.search,
        "corpus": args.corpus,
        "max_turns": args.max_turns,
        "reader": args.reader,
        **getattr(agent, "env_options", {}),
    }
    env = gym.make("drgym/WebResearch-v0", **env_kwargs)
    options: dict[str, Any] | None = None
    if args.question is not None:
        options = {"question": args.question, "answers": args.answers or []}
    elif args.index is not None:
        options = {"index": args.index}
    traj = run_episode(env, agent, seed=args.seed, options=options)
    env.close()
    close = getattr(agent, "close", None)
    if close is not None:  # BaseAgent.close: the agent's aclose on the loop its act used (its HTTP sessions)
        close()
    print(json.dumps(traj.to_dict(), ensure_ascii=False, indent=None if args.compact else 2))
    return 0 if traj.error is None else 1


def _cmd_search(args: argparse.Namespace) -> int:
    from drgym.search import make_backend

    kwargs: dict[str, Any] = {}
    if args.backend == "local":
        kwargs["name"] = args.corpus
    elif args.backend == "miniweb":  # the corpus served; result URLs point at a site that ends with the command
        kwargs["corpus"] = args.corpus
    elif args.base_url is not None:  # e.g. a self-hosted SearxNG, or `drgym miniweb serve`'s Serper endpoint
        kwargs["base_url"] = args.base_url

    async def go() -> list[Any]:
        backend = make_backend(args.backend, **kwargs)
        try:
            return await backend.search(args.query, args.k)
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    print(json.dumps([{"title": r.title, "url": r.url, "snippet": r.snippet, **r.extras} for r in results],
                     ensure_ascii=False, indent=2, default=str))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from drgym import data

    if args.data_cmd == "list":
        rows = [("dataset", name) for name in data.list_datasets()] + [("corpus", n) for n in data.list_corpora()]
        for kind, name in rows:
            info = data.dataset_info(name)
            print(f"{kind:8} {name:24} {info.get('description', '')}")
        return 0
    paths = data.download(args.name)
    for path in paths:
        print(path)
    return 0


def _cmd_agents(_: argparse.Namespace) -> int:
    from drgym.agent import agent_names

    for name in agent_names():
        print(name)
    return 0


COMMAND_GROUP = "drgym.commands"
"""Subcommands that live outside the core register here: ``NAME = "module:main"``, ``main(argv) -> int``."""


def _plugin_commands() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drgym", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_episode(sub)
    s = sub.add_parser("search", help="query a search backend and print the results as JSON")
    s.add_argument("query")
    s.add_argument("--backend", default="local")
    s.add_argument("--corpus", default="wiki-local", help="corpus of the local and miniweb backends")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--base-url", default=None, help="API base URL of a live backend (default: the provider's)")
    d = sub.add_parser("data", help="list or download datasets and corpora")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dsub.add_parser("list", help="list datasets and corpora")
    dl = dsub.add_parser("download", help="download (or fetch from the mirror) and verify a dataset or corpus")
    dl.add_argument("name")
    sub.add_parser("agents", help="list the agents that can be named with --agent")
    for name, ep in sorted(_plugin_commands().items()):
        sub.add_parser(name, help=f"{ep.value} (see `drgym {name} --help`)", add_help=False)
    return parser


def _extra_commands(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Subcommands that live beside their subsystem (web tools, the cache, the mini-web, the gateway, verl data)."""
    from drgym import cli_cache, cli_web
    from drgym.gateway import cli as cli_gateway
    from drgym.integrations.verl import data as verl_data

    return {**cli_web.register(sub), **cli_cache.register(sub), **cli_gateway.register(sub),
            **verl_data.register(sub)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = _plugin_commands()
    if argv and argv[0] in plugins:  # it parses its own arguments
        return int(plugins[argv[0]].load()(argv[1:]))
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = _extra_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    from drgym.errors import DrgymError

    handlers = {"episode": _cmd_episode, "search": _cmd_search, "data": _cmd_data, "agents": _cmd_agents, **extra}
    try:
        return handlers[args.cmd](args)
    except DrgymError as exc:
        print(f"drgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
