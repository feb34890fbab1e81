"""A chat client for any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, SGLang, drgym's server).

One aiohttp session per event loop, created lazily inside that loop: the environment's synchronous API runs
coroutines on a private background loop while async users run on their own, and a session must never be used
from a loop other than its own. Concurrency is bounded per loop by a semaphore; failures that may pass (429,
5xx, timeouts, dropped connections) are retried under a :class:`~drgym.retry.RetryPolicy` that honours
``Retry-After``; everything else fails at once with an :class:`~drgym.errors.LLMError` carrying the server's
own message.

Empty replies: a reply whose ``content`` is the empty string is returned as ``Completion(text="")`` with its
``finish_reason`` (a policy may legitimately stop at once; the environment scores that as a format failure). A
reply with no ``content`` at all (missing or ``null``, e.g. a refusal or tool-call-only message) raises
``LLMError``, since there is no text to act on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from drgym.errors import ConfigError, LLMError
from drgym.llm._eager import REQUEST_CLASS
from drgym.llm.base import Completion, ContextOverflowError, Message
from drgym.retry import Retryable, RetryPolicy, parse_retry_after, with_retries

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["DEFAULT_TIMEOUT", "ContextOverflowError", "OpenAIChatClient"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=300.0, sock_connect=10.0)
"""Generous total time (long generations on a busy server are slow), short connect time (a dead host fails fast)."""

_CONTEXT_RE = re.compile(
    r"maximum context length|context_length_exceeded|context length exceeded|maximum model length"
    r"|prompt is too long|input is too long",
    re.IGNORECASE,
)
_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""Compact request bodies, encoded once per call (not once per retry); ASCII escapes keep lone surrogates
from web text encodable."""
_HOW_TO_SERVE = (
    "start a server (e.g. `python -m drgym.llm.server --model tiny --port 8000`, or `vllm serve MODEL`) "
    "or point base_url at a running OpenAI-compatible server"
)


@dataclass
class _LoopState:
    """The session and concurrency limit that belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    model_lock: asyncio.Lock


class OpenAIChatClient:
    """Completes chats through ``POST {base_url}/chat/completions`` (non-streaming).

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1`` or ``https://api.openai.com/v1``.
        model: Model name sent with each request; ``None`` asks the server (``GET {base_url}/models``) once and
            uses the first model it lists (handy for single-model servers such as vLLM).
        api_key: Bearer token. Defaults to the environment variable named by ``api_key_env``; a local server
            usually needs none. Never logged or shown in ``repr``.
        api_key_env: Environment variable read when ``api_key`` is not given.
        timeout: Per-attempt HTTP timeout, a ``ClientTimeout`` or seconds.
        retry: Retry policy for 429/5xx/timeouts/connection errors; other 4xx are never retried.
        max_concurrency: Requests in flight at once, per event loop.
        headers: Extra HTTP headers (e.g. ``OpenAI-Organization``).
        **default_sampling: Sampling options sent with every request (``temperature``, ``top_p``,
            ``max_tokens``, ``stop``, ``seed``, ...); per-call options override them.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: aiohttp.ClientTimeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 64,
        headers: Mapping[str, str] | None = None,
        **default_sampling: Any,
    ) -> None:
        self.base_url = _normalise_base_url(base_url)
        self.model = model
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = _as_timeout(timeout)
        self.default_sampling = dict(default_sampling)
        self._api_key_env = api_key_env
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._chat_url = f"{self.base_url}/chat/completions"
        self._urls = _parsed_urls(self._chat_url, f"{self.base_url}/models")
        self._states: dict[int, _LoopState] = {}

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def complete(self, messages: list[Message], **sampling: Any) -> Completion:
        """Send one chat and return the first choice.

        Raises:
            ContextOverflowError: The server says the conversation exceeds the model's context.
            LLMError: Any other failure, after retries where retrying makes sense.
            ConfigError: ``n`` other than 1 (one call returns one completion).
        """
        options = {k: v for k, v in {**self.default_sampling, **sampling}.items() if v is not None}
        if options.get("n", 1) != 1:
            raise ConfigError(f"complete() returns one completion; got n={options['n']!r} (call it n times)")
        options.pop("stream", None)
        state = self._state()
        model = self.model if self.model is not None else await self._resolve_model(state)
        body = _ENCODER.encode({**options, "model": model, "messages": list(messages), "stream": False}).encode()
        data, attempts = await self._request(state, "POST", self._chat_url, body)
        return _parse_completion(data, self._chat_url, attempts)

    async def list_models(self) -> list[str]:
        """Model ids the server offers (``GET {base_url}/models``)."""
        url = f"{self.base_url}/models"
        data, _ = await self._request(self._state(), "GET", url, None)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise LLMError(f"{url} returned no model list: {_snippet(data)}")
        return [str(item["id"]) for item in items if isinstance(item, dict) and "id" in item]

    async def aclose(self) -> None:
        """Close the sessions of every loop this client was used on.

        A session on another live loop (e.g. the environment's background loop) is closed on that loop; one
        whose loop has already closed cannot be closed any more and is dropped.
        """
        states, self._states = list(self._states.values()), {}
        current = _running_loop()
        for state in states:
            if state.loop is current:
                await state.session.close()
            elif state.loop.is_running() and not state.loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(state.session.close(), state.loop)
                if current is not None:
                    await asyncio.wait([asyncio.wrap_future(future)], timeout=5.0)
            else:
                state.session.detach()

    # -- internals -------------------------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(id(loop))
        if state is not None and state.loop is loop and not state.session.closed:
            return state
        for key, old in list(self._states.items()):
            if old.loop.is_closed():  # sessions of finished loops (e.g. one asyncio.run per script step)
                old.session.detach()
                self._states.pop(key, None)
        # One kept-alive connection per request in flight: the semaphore admits max_concurrency at once.
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, raise_for_status=False, headers=self._headers,
            request_class=REQUEST_CLASS,
        )
        state = _LoopState(loop, session, asyncio.Semaphore(self.max_concurrency), asyncio.Lock())
        self._states[id(loop)] = state
        return state

    async def _resolve_model(self, state: _LoopState) -> str:
        async with state.model_lock:
            if self.model is None:
                models = await self.list_models()
                if not models:
                    raise LLMError(f"{self.base_url}/models lists no models; pass model= explicitly")
                self.model = models[0]
        return self.model

    async def _request(
        self, state: _LoopState, method: str, url: str, payload: bytes | None
    ) -> tuple[Any, int]:
        """One HTTP exchange under the retry policy; returns the decoded JSON and the attempts it took."""

        async def attempt(number: int, remaining: float) -> tuple[Any, int]:
            async with state.semaphore:
                status, body, retry_after = await self._send(state.session, method, url, payload)
            if 200 <= status < 300:
                return _decode_json(body, url), number
            message, code = _error_message(body)
            if self.retry.is_retryable_status(status):
                raise Retryable(f"HTTP {status}: {message}", retry_after=parse_retry_after(retry_after),
                                rate_limited=status == 429)
            raise self._http_error(status, message, code, url)

        return await with_retries(attempt, self.retry, what=f"chat request to {url}", give_up=_give_up)

    async def _send(
        self, session: aiohttp.ClientSession, method: str, url: str, payload: bytes | None
    ) -> tuple[int, bytes, str | None]:
        try:  # the session sends self._headers; the URL object skips parsing the address on every call
            async with session.request(method, self._urls.get(url, url), data=payload) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except asyncio.TimeoutError as exc:
            raise Retryable(f"no answer within the timeout ({_describe_timeout(self.timeout)})") from exc
        except aiohttp.ClientConnectorError as exc:
            raise Retryable(f"cannot reach {url} ({exc.os_error}); {_HOW_TO_SERVE}") from exc
        except aiohttp.InvalidURL as exc:
            raise ConfigError(f"invalid base_url {self.base_url!r}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(f"connection to {url} failed ({type(exc).__name__}: {exc})") from exc

    def _http_error(self, status: int, message: str, code: str | None, url: str) -> LLMError:
        if status in (400, 413, 422) and (code == "context_length_exceeded" or _CONTEXT_RE.search(message)):
            return ContextOverflowError(f"{message} (HTTP {status} from {url})")
        hint = ""
        if status in (401, 403):
            hint = f"; check the API key (api_key= or ${self._api_key_env})"
        elif status == 404:
            hint = f"; check base_url ({self.base_url}) and the model name ({self.model!r})"
        return LLMError(f"HTTP {status} from {url}: {message}{hint}")


def _give_up(message: str, last: Retryable) -> LLMError:
    return LLMError(message)


def _normalise_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
        raise ConfigError(f"base_url must be an http(s) URL such as http://localhost:8000/v1, got {base_url!r}")
    url = base_url.rstrip("/")
    return url.removesuffix("/chat/completions")


def _parsed_urls(*urls: str) -> dict[str, URL]:
    """The endpoints, parsed once; one that does not parse is left to fail on use with aiohttp's message."""
    parsed: dict[str, URL] = {}
    for url in urls:
        try:
            parsed[url] = URL(url)
        except ValueError:
            pass
    return parsed


def _as_timeout(timeout: aiohttp.ClientTimeout | float | None) -> aiohttp.ClientTimeout:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, aiohttp.ClientTimeout):
        return timeout
    if isinstance(timeout, (int, float)) and timeout > 0:
        return aiohttp.ClientTimeout(total=float(timeout), sock_connect=min(10.0, float(timeout)))
    raise ConfigError(f"timeout must be an aiohttp.ClientTimeout or seconds > 0, got {timeout!r}")


def _describe_timeout(timeout: aiohttp.ClientTimeout) -> str:
    parts = [f"{name}={getattr(timeout, name):g}s" for name in ("total", "connect", "sock_connect", "sock_read")
             if getattr(timeout, name) is not None]
    return ", ".join(parts) or "no limit"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _snippet(value: Any, limit: int = 300) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _decode_json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise LLMError(f"{url} returned malformed JSON ({exc}): {_snippet(body)!r}") from exc


def _error_message(body: bytes) -> tuple[str, str | None]:
    """The message and code of an error reply in any of the usual shapes (OpenAI, vLLM, FastAPI, plain text)."""
    try:
        data = json.loads(body)
    except ValueError:
        return (_snippet(body).strip() or "(empty body)"), None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or data.get("message") or data.get("detail")
            code = err.get("code") or err.get("type")
            return str(message if message is not None else _snippet(body)), None if code is None else str(code)
        if isinstance(err, str):
            return err, None
    return _snippet(body), None


def _parse_completion(data: Any, url: str, attempts: int) -> Completion:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMError(f"{url} returned no choices: {_snippet(data)}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    finish_reason = choice.get("finish_reason")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        refusal = message.get("refusal")
        extra = f", refusal: {refusal!r}" if refusal else ""
        raise LLMError(f"{url} returned a message without content (finish_reason={finish_reason!r}{extra})")
    if not isinstance(content, str):
        raise LLMError(f"{url} returned non-text content: {_snippet(content)}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    extras: dict[str, Any] = {"id": data.get("id"), "model": data.get("model"), "usage": usage, "attempts": attempts}
    if message.get("reasoning_content"):
        extras["reasoning_content"] = message["reasoning_content"]
    return Completion(
        text=content,
        tokens=_as_int(usage.get("completion_tokens")),
        prompt_tokens=_as_int(usage.get("prompt_tokens")),
        finish_reason=finish_reason,
        logprobs=_sampled_logprobs(choice.get("logprobs")),
        extras=extras,
    )


def _sampled_logprobs(logprobs: Any) -> list[float] | None:
    """Per-token logprobs from ``choices[0].logprobs.content`` when the request asked for them."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    try:
        return [float(item["logprob"]) for item in content]
    except (KeyError, TypeError, ValueError):
        return None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
