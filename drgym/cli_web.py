"""`drgym` subcommands for web tools: fetch, extract, read, and the mini-web server.

* ``drgym fetch URL``: the page as clean markdown (the fetcher with its SSRF guard and caps, then extraction);
* ``drgym extract FILE|-``: HTML in (a file, or stdin), markdown out;
* ``drgym read URL --question Q``: what the browsing agent keeps from the page for the question;
* ``drgym miniweb serve``: the mini-web on loopback (article pages, SearxNG and Serper search APIs).

Exit codes: 0 success; 1 the page could not be fetched or read (network, timeout, HTTP status, nothing
readable); 2 bad arguments or configuration; 3 the URL or its content was refused (SSRF guard, robots.txt,
a content type that is not text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

__all__ = ["EXIT_FAILED", "EXIT_REFUSED", "register"]

EXIT_FAILED = 1
"""The page could not be fetched or read."""
EXIT_REFUSED = 3
"""The URL or its content was refused (SSRF guard, robots.txt, unsupported content type)."""

_Handler = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction) -> dict[str, _Handler]:
    """Add this module's subcommands to ``sub``; return ``{command: handler}`` (a handler returns the exit code)."""
    _add_fetch(sub)
    _add_extract(sub)
    _add_read(sub)
    _add_miniweb(sub)
    return {"fetch": _cmd_fetch, "extract": _cmd_extract, "read": _cmd_read, "miniweb": _cmd_miniweb}


# ---------------------------------------------------------------------------------------------- parsers


def _add_fetch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="the http(s) URL to read")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="host, IP address or CIDR network exempt from the SSRF guard (e.g. 127.0.0.1 for a "
                        "local server); repeatable")
    p.add_argument("--timeout", type=float, default=30.0, help="total time limit of the fetch, seconds")
    p.add_argument("--max-bytes", type=int, default=4 * 1024 * 1024, help="most body bytes read from the wire")
    p.add_argument("--robots", action="store_true", help="honour the site's robots.txt")


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="fetch a URL safely and print it as clean markdown",
                       description="Fetch URL through the SSRF-guarded fetcher and print its main content as "
                                   "markdown. A refusal or failure is printed to stderr with a non-zero exit "
                                   "(1: failed, 3: refused).")
    _add_fetch_options(p)
    p.add_argument("--raw", action="store_true", help="print the decoded body instead of extracted markdown")
    p.add_argument("--links", action="store_true", help="keep hyperlinks as markdown links")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object: url, status, content_type, charset, truncated, redirects, text")


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="convert an HTML file (or stdin) to clean markdown",
                       description="Read HTML from FILE (or stdin with -) and print its main content as markdown. "
                                   "The charset comes from a BOM, UTF-8 validity or <meta charset>.")
    p.add_argument("file", help="an HTML file, or - for stdin")
    p.add_argument("--url", default=None, help="the page's address, to resolve relative links")
    p.add_argument("--links", action="store_true", help="keep hyperlinks as markdown links")
    p.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024, help="refuse inputs larger than this")


def _add_read(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("read", help="read a URL with the browsing agent and print what it keeps",
                       description="Fetch URL, extract it, and let the reader keep what is relevant to the "
                                   "question (the browse_webpage tool's output for one page).")
    _add_fetch_options(p)
    p.add_argument("--question", required=True, help="the research question")
    p.add_argument("--subquestion", default="", help="the search query that surfaced the page")
    p.add_argument("--reader", default="lexical",
                   help="lexical (no model) or an LLM spec for the paper's browsing agent: openai:URL | "
                        "hf:PATH | vllm:NAME | tiny")
    p.add_argument("--model", default=None, help="model name served at an openai: reader")
    p.add_argument("--segment-chars", type=int, default=40960, help="segment (viewport) size in characters")
    p.add_argument("--max-segments", type=int, default=8, help="most segments the reader goes through")
    p.add_argument("--max-tokens", type=int, default=1024, help="LLM reader: completion cap per segment")
    p.add_argument("--json", action="store_true", help="print the page notes as a JSON object")


def _add_miniweb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("miniweb", help="the mini-web: a corpus served as a local website")
    msub = p.add_subparsers(dest="miniweb_cmd", required=True)
    s = msub.add_parser("serve", help="serve a corpus on loopback until interrupted",
                        description="Serve the corpus as HTML pages (/wiki/<title>) with a SearxNG API "
                                    "(GET /search?q=&format=json) and a Serper API (POST /serper/search).")
    s.add_argument("--corpus", default="demo", help="corpus to serve (demo, wiki-local, ...)")
    s.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    s.add_argument("--port", type=int, default=8080, help="port (0: any free port; the URL is printed)")
    s.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every answer, milliseconds")
    s.add_argument("--jitter-ms", type=float, default=0.0, help="extra random delay per answer, up to this")
    s.add_argument("--fault-rate", type=float, default=0.0,
                   help="probability that a request fails (429, 503, connection reset, slow drip)")
    s.add_argument("--faults", default=None, metavar="KINDS",
                   help="comma-separated fault kinds to draw from (default: 429,503,reset,drip)")
    s.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of an injected 429, seconds")
    s.add_argument("--seed", type=int, default=0, help="seed of the fault and jitter draws")
    s.add_argument("--results-per-page", type=int, default=10, help="results per SearxNG page")


# ---------------------------------------------------------------------------------------------- helpers


def _fetch_config(args: argparse.Namespace) -> Any:
    from drgym.web.fetch import FetchConfig

    timeout = args.timeout
    return FetchConfig(
        allow_hosts=frozenset(args.allow_host),
        total_timeout=timeout,
        connect_timeout=min(10.0, timeout),
        read_timeout=min(20.0, timeout),
        max_bytes=args.max_bytes,
        per_host_rate=None,
        respect_robots=args.robots,
    )


def _failure(command: str, exc: BaseException) -> int:
    """Print why ``command`` failed; the exit code says whether it was refused or failed."""
    from drgym.errors import BlockedURLError, UnsupportedContentError

    refused = isinstance(exc, (BlockedURLError, UnsupportedContentError))
    print(f"drgym {command}: {'refused' if refused else 'failed'}: {exc}", file=sys.stderr)
    return EXIT_REFUSED if refused else EXIT_FAILED


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------------------------------------- commands


def _cmd_fetch(args: argparse.Namespace) -> int:
    return _run(_fetch(args))


async def _fetch(args: argparse.Namespace) -> int:
    from drgym.errors import FetchError
    from drgym.web.extract import extract
    from drgym.web.fetch import Fetcher
    from drgym.web.isolation import IsolatedPool

    deadline = time.monotonic() + args.timeout  # --timeout bounds the whole command: fetch and extraction
    pool = IsolatedPool(workers=1)
    pool.start()  # the worker starts while the page downloads
    try:
        async with Fetcher(_fetch_config(args), pool=pool) as fetcher:
            try:
                page = await fetcher.fetch(args.url)
            except FetchError as exc:
                return _failure("fetch", exc)
        markup = page.content_type in ("text/html", "application/xhtml+xml")
        text = page.text
        if markup and not args.raw:
            left = max(0.1, deadline - time.monotonic())
            try:  # the wait for a worker counts too; cancelling the call kills the worker
                text = await asyncio.wait_for(pool.run(extract, page.text, page.url, links=args.links), left)
            except asyncio.TimeoutError:
                return _failure("fetch", FetchError(
                    f"extracting the text of {page.url} took longer than the rest of --timeout "
                    f"{args.timeout:g} s and was stopped"
                ))
    finally:
        pool.close()
    if args.json:
        record = {
            "url": page.url,
            "status": page.status,
            "content_type": page.content_type,
            "charset": page.charset,
            "truncated": page.truncated,
            "truncated_by": page.truncated_by,
            "redirects": page.redirects,
            "raw_bytes": page.raw_bytes_len,
            "text": text,
        }
        print(json.dumps(record, ensure_ascii=False, indent=2))
    elif text.strip():
        _print_text(text)
    if page.truncated:
        print(f"drgym fetch: note: {_truncation_note(page, args)}", file=sys.stderr)
    if not text.strip():
        print(f"drgym fetch: failed: {page.url} has no readable text", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _truncation_note(page: Any, args: argparse.Namespace) -> str:
    """Say which limit or fault cut the body, with the figure that applies."""
    from drgym.web.fetch import FetchConfig

    if page.truncated_by == "max_bytes":
        return f"the body was cut at the size cap (--max-bytes {args.max_bytes} bytes read from the wire)"
    if page.truncated_by == "max_decompressed_bytes":
        cap = FetchConfig().max_decompressed_bytes
        return (f"the body was cut at the decompression cap ({cap} bytes once inflated; "
                f"{page.raw_bytes_len} compressed bytes read)")
    if page.truncated_by == "connection":
        return (f"the connection dropped before the whole body arrived; what came ({page.raw_bytes_len} bytes) "
                "is shown")
    if page.truncated_by == "corrupt":
        return f"the compressed body turned corrupt after {page.raw_bytes_len} bytes; what decoded is shown"
    return "the body is incomplete"


def _cmd_extract(args: argparse.Namespace) -> int:
    from drgym.errors import ConfigError
    from drgym.web.extract import extract

    if args.file == "-":
        data = sys.stdin.buffer.read(args.max_bytes + 1)
    else:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"extract: no such file: {args.file}")
        with path.open("rb") as fh:
            data = fh.read(args.max_bytes + 1)
    if len(data) > args.max_bytes:
        raise ConfigError(f"extract: the input is larger than --max-bytes={args.max_bytes}")
    text = extract(data, args.url, links=args.links)
    if not text.strip():
        print("drgym extract: failed: no readable text in the input (empty, binary or no content)",
              file=sys.stderr)
        return EXIT_FAILED
    _print_text(text)
    return 0


def _cmd_read(args: argparse.Namespace) -> int:
    return _run(_read(args))


def _make_reader(args: argparse.Namespace) -> tuple[Any, Any]:
    """The reader named by ``--reader``, and the chat client to close afterwards (None for lexical)."""
    from drgym.browse import BrowsingAgent, LexicalReader

    if args.reader == "lexical":
        return LexicalReader(segment_chars=args.segment_chars, max_segments=args.max_segments), None
    from drgym.llm import make_client

    client = make_client(args.reader, model=args.model)
    agent = BrowsingAgent(
        client,
        segment_chars=args.segment_chars,
        max_segments=args.max_segments,
        max_tokens=args.max_tokens,
        time_budget_s=args.timeout,
    )
    return agent, client


async def _read(args: argparse.Namespace) -> int:
    from drgym.browse import EpisodeMemory
    from drgym.errors import FetchError
    from drgym.web.isolation import IsolatedPool
    from drgym.web.opener import PageOpener

    reader, client = _make_reader(args)
    pool = IsolatedPool(workers=1, time_limit_s=args.timeout)
    pool.start()
    opener = PageOpener(config=_fetch_config(args), pool=pool)
    try:
        try:
            doc = await asyncio.wait_for(opener(args.url), args.timeout)
        except asyncio.TimeoutError:
            return _failure("read", FetchError(f"reading {args.url} took longer than --timeout {args.timeout:g} s"))
        except FetchError as exc:
            return _failure("read", exc)
        notes = await reader.read(doc, question=args.question, subquestion=args.subquestion,
                                  memory=EpisodeMemory())
    finally:
        await opener.aclose()
        pool.close()
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
    if args.json:
        print(json.dumps(notes.to_dict(), ensure_ascii=False, indent=2))
    elif notes.notes.strip():
        _print_text(notes.notes)
    if notes.error is not None:
        print(f"drgym read: failed: {notes.error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_miniweb(args: argparse.Namespace) -> int:
    from drgym.miniweb import FAULT_KINDS, FaultConfig, serve

    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip()) if args.faults else FAULT_KINDS
    faults = FaultConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fault_rate=args.fault_rate,
        kinds=kinds,
        seed=args.seed,
        retry_after_s=args.retry_after,
    )

    def ready(base_url: str, wiki: Any) -> None:
        print(f"miniweb: serving {len(wiki)} articles of corpus {wiki.corpus!r} at {base_url}", flush=True)
        print(f"  pages:   {base_url}/wiki/<title>", flush=True)
        print(f"  searxng: GET  {base_url}/search?q=...&format=json", flush=True)
        print(f"  serper:  POST {base_url}/serper/search  {{\"q\": ..., \"num\": 10}}", flush=True)
        if faults.active:
            print(f"  faults:  latency {faults.latency_ms:g} ms (+ up to {faults.jitter_ms:g}), rate "
                  f"{faults.fault_rate:g} of {','.join(faults.kinds)}, seed {faults.seed}", flush=True)

    try:
        asyncio.run(serve(args.corpus, host=args.host, port=args.port, faults=faults,
                          results_per_page=args.results_per_page, on_ready=ready))
    except KeyboardInterrupt:
        pass
    return 0
