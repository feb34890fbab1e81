"""A small OpenAI-compatible chat server over any :class:`~drgym.llm.base.ChatClient`.

Serves ``POST /v1/chat/completions`` (non-streaming, with ``usage`` and optional ``logprobs``) and
``GET /v1/models``; errors use OpenAI's JSON shape, and a prompt that does not fit the model answers HTTP 400
with code ``context_length_exceeded``. Concurrent requests reach the client concurrently, so a
:class:`~drgym.llm.local.TransformersChatClient` batches them. Sampling fields passed on: ``temperature``,
``top_p``, ``top_k``, ``max_tokens``/``max_completion_tokens``, ``stop``, ``seed``,
``include_stop_str_in_output``; other OpenAI fields (penalties, tools, response_format) are ignored.

Serve a local model::

    python -m drgym.llm.server --model tiny --port 8000          # the tiny random test model
    python -m drgym.llm.server --model Qwen/Qwen2.5-0.5B-Instruct --port 8000

then point any OpenAI client (or ``make_client("openai:http://127.0.0.1:8000/v1")``) at it.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from drgym.errors import ConfigError, DrgymError, LLMError
from drgym.llm.base import ChatClient, Completion, ContextOverflowError

__all__ = ["CLIENT_KEY", "MODEL_NAME_KEY", "create_app", "main"]

logger = logging.getLogger(__name__)

CLIENT_KEY = web.AppKey("drgym_chat_client", ChatClient)
MODEL_NAME_KEY = web.AppKey("drgym_model_name", str)

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "stop", "seed",
                    "include_stop_str_in_output")
_MAX_BODY = 64 * 1024 * 1024


def create_app(client: ChatClient, model_name: str) -> web.Application:
    """An aiohttp application serving ``client`` under the model id ``model_name``."""
    app = web.Application(client_max_size=_MAX_BODY, middlewares=[_json_errors])
    app[CLIENT_KEY] = client
    app[MODEL_NAME_KEY] = model_name
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    return app


def _error(status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
           param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes, wrong methods and unexpected failures answer in OpenAI's error format too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}",
                      code="not_found" if exc.status == 404 else None)
    except Exception as exc:  # a bug must still answer in the API's format
        logger.exception("unhandled error serving %s", request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", type_="server_error")


async def _models(request: web.Request) -> web.Response:
    name = request.app[MODEL_NAME_KEY]
    return web.json_response(
        {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "drgym"}]}
    )


async def _chat_completions(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object")
    name = request.app[MODEL_NAME_KEY]
    if body.get("model") not in (None, name):
        return _error(404, f"The model `{body['model']}` does not exist; this server serves `{name}`.",
                      code="model_not_found", param="model")
    if body.get("stream"):
        return _error(400, "streaming is not supported by this server; send stream=false", param="stream")
    if body.get("n", 1) != 1:
        return _error(400, "only n=1 is supported", param="n")
    messages = body.get("messages")
    try:
        messages = _text_messages(messages)
    except ConfigError as exc:
        return _error(400, str(exc), param="messages")
    sampling = {k: body[k] for k in _SAMPLING_FIELDS if body.get(k) is not None}
    try:
        completion = await request.app[CLIENT_KEY].complete(messages, **sampling)
    except ContextOverflowError as exc:
        return _error(400, f"This model's maximum context length was exceeded: {exc}", code="context_length_exceeded",
                      param="messages")
    except ConfigError as exc:
        return _error(400, str(exc))
    except (LLMError, DrgymError) as exc:
        logger.warning("generation failed: %s", exc)
        return _error(500, str(exc), type_="server_error")
    return web.json_response(_response(completion, name, want_logprobs=bool(body.get("logprobs"))))


def _text_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages with content parts flattened to text; ``ConfigError`` naming the bad message otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ConfigError(f"messages[{i}] must be an object with a 'role'")
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": m["role"], "content": content})
    return out


def _response(completion: Completion, model_name: str, *, want_logprobs: bool) -> dict[str, Any]:
    prompt = completion.prompt_tokens or 0
    generated = completion.tokens or 0
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": completion.text},
        "finish_reason": completion.finish_reason or "stop",
        "logprobs": None,
    }
    if want_logprobs and completion.logprobs is not None:
        ids = completion.token_ids or [None] * len(completion.logprobs)
        choice["logprobs"] = {
            "content": [{"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
                        for t, lp in zip(ids, completion.logprobs)]
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated},
    }


def _build_client(args: argparse.Namespace) -> ChatClient:
    if args.model == "tiny":
        from drgym.llm.tiny import tiny_chat_client

        return tiny_chat_client(max_new_tokens=args.max_new_tokens, max_batch_size=args.max_batch_size)
    from drgym.llm.local import TransformersChatClient

    return TransformersChatClient(args.model, device=args.device, dtype=args.dtype,
                                  max_new_tokens=args.max_new_tokens, max_batch_size=args.max_batch_size)


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a local model over the OpenAI chat API."""
    parser = argparse.ArgumentParser(prog="python -m drgym.llm.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model name or path, or 'tiny' for the tiny random model")
    parser.add_argument("--served-model-name", default=None, help="model id clients send (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="default max_tokens of a reply")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = _build_client(args)
    name = args.served_model_name or args.model
    logger.info("serving %s as %r on http://%s:%d/v1", args.model, name, args.host, args.port)
    web.run_app(create_app(client, name), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
