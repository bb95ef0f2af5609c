"""An OpenAI-compatible chat server over a ChatModel, plus a one-file web page at `/`.

    app = create_app(chat, "my-model", max_queue=8)
    uvicorn.run(app, host="127.0.0.1", port=8000)

`GET /v1/models`, `POST /v1/chat/completions` (text and `image_url` parts, `stream: true` as
server-sent events, max_tokens, temperature, top_p, stop, usage). Every error is OpenAI's shape
`{"error": {"message", "type", "param", "code"}}` with a 4xx status (5xx only for our own bugs and
for a full queue). Requests wait in a bounded queue: one generation runs at a time on the model and
at most `max_queue` requests are admitted; the next one gets 503. No request can stop the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from vlmtune.data.sample import IMAGE_PLACEHOLDER, Message
from vlmtune.inference import ChatModel, PromptError
from vlmtune.serving.images import MAX_IMAGE_BYTES, ImageRequestError, image_from_url

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024 * 1024


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ServerOptions:
    model_name: str
    max_queue: int = 16
    allow_remote_images: bool = False
    max_image_bytes: int = MAX_IMAGE_BYTES
    default_max_tokens: int = 256
    max_images: int = 8


@dataclass
class ChatRequest:
    messages: list[Message]
    images: list
    stream: bool = False
    include_usage: bool = False
    gen: dict = field(default_factory=dict)


def parse_request(body: Any, opts: ServerOptions) -> ChatRequest:
    """Validate an OpenAI chat-completions body; images are decoded here (an undecodable one is a 400)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object.", "invalid_body")
    model = body.get("model")
    if model is not None and model != opts.model_name:
        raise APIError(404, f"The model `{model}` does not exist; this server serves `{opts.model_name}`.",
                       "model_not_found", "model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "`messages` must be a non-empty list.", "invalid_messages", "messages")
    messages, images = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object.", "invalid_messages", f"messages[{i}]")
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}].role must be system, user or assistant; got {m.get('role')!r}.",
                           "invalid_role", f"messages[{i}].role")
        messages.append(Message(role, _content(m.get("content"), i, images, opts)))
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be from the user.", "invalid_messages", "messages")
    if len(images) > opts.max_images:
        raise APIError(400, f"at most {opts.max_images} images per request.", "too_many_images", "messages")

    n = body.get("n", 1)
    if n not in (1, None):
        raise APIError(400, "only n=1 is supported.", "unsupported_parameter", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or opts.default_max_tokens
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p", 1.0)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop or []
    checks = [(isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1, "max_tokens", "a positive integer"),
              (_number(temperature) and 0 <= temperature <= 2, "temperature", "a number in [0, 2]"),
              (_number(top_p) and 0 < top_p <= 1, "top_p", "a number in (0, 1]"),
              (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop), "stop", "a string or a list of up to 4 strings"),
              (isinstance(body.get("stream", False), bool), "stream", "a boolean")]
    for ok, param, what in checks:
        if not ok:
            raise APIError(400, f"`{param}` must be {what}.", "invalid_value", param)
    so = body.get("stream_options") or {}
    return ChatRequest(messages, images, bool(body.get("stream")), bool(isinstance(so, dict) and so.get("include_usage")),
                       dict(max_new_tokens=max_tokens, temperature=float(temperature or 0.0), top_p=float(top_p), stop=stop))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _content(content, i: int, images: list, opts: ServerOptions) -> str:
    """A message's text, with an `<image>` placeholder where each image part was."""
    if isinstance(content, str):
        return content.replace(IMAGE_PLACEHOLDER, "")  # placeholders come only from image parts
    if content is None:
        return ""
    if not isinstance(content, list):
        raise APIError(400, f"messages[{i}].content must be a string or a list of parts.", "invalid_content", f"messages[{i}].content")
    text = ""
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text += part["text"].replace(IMAGE_PLACEHOLDER, "")
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            try:
                images.append(image_from_url(url, allow_remote=opts.allow_remote_images, max_bytes=opts.max_image_bytes))
            except ImageRequestError as e:
                raise APIError(400, str(e), e.code, param) from None
            text += IMAGE_PLACEHOLDER + "\n"
        else:
            raise APIError(400, f"{param} must be {{type: text, text}} or {{type: image_url, image_url: {{url}}}}.", "invalid_content", param)
    return text


class Admission:
    """At most `limit` requests admitted (running or waiting for the model); the rest are refused."""

    def __init__(self, limit: int):
        self.limit, self.count, self.lock = limit, 0, threading.Lock()

    def enter(self) -> None:
        with self.lock:
            if self.count >= self.limit:
                raise APIError(503, f"the server is busy ({self.limit} requests queued); retry shortly.", "server_busy",
                               type="server_error")
            self.count += 1

    def leave(self) -> None:
        with self.lock:
            self.count -= 1


def create_app(chat: ChatModel, model_name: str, **options):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    opts = ServerOptions(model_name=model_name, **options)
    admission = Admission(opts.max_queue)
    created = int(time.time())
    app = FastAPI(title="vlmtune", docs_url=None, redoc_url=None)

    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(APIError(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(APIError(400, str(exc), "invalid_request"))

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        return error(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error", type="server_error"))

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "admitted": admission.count}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "vlmtune"}]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != model_name:
            return error(APIError(404, f"The model `{name}` does not exist.", "model_not_found", "model"))
        return {"id": model_name, "object": "model", "created": created, "owned_by": "vlmtune"}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        try:
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes.", "request_too_large")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise APIError(400, f"the request body is not valid JSON: {e}", "invalid_json") from None
            req = await run_in_threadpool(parse_request, body, opts)
            admission.enter()
        except APIError as e:
            return error(e)
        try:
            prompt_tokens = await run_in_threadpool(_check_prompt, chat, req)
            if req.stream:
                stream = _sse(chat, req, model_name, prompt_tokens, admission)
                return StreamingResponse(stream, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            result = (await run_in_threadpool(chat.complete, [req.messages], [req.images], **req.gen))[0]
        except APIError as e:
            admission.leave()
            return error(e)
        except BaseException:
            admission.leave()
            raise
        admission.leave()
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason, "logprobs": None}],
                "usage": _usage(result.prompt_tokens, result.completion_tokens)}

    return app


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _check_prompt(chat: ChatModel, req: ChatRequest) -> int:
    """Render and count the prompt up front, so a bad or too-long one is a 400 before any streaming starts."""
    try:
        n = chat.count_tokens(req.messages, req.images)
    except PromptError as e:
        raise APIError(400, str(e), "invalid_prompt", "messages") from None
    limit = chat.max_context
    if limit and n + req.gen["max_new_tokens"] > limit:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                            f"{n + req.gen['max_new_tokens']} tokens ({n} in the messages, {req.gen['max_new_tokens']} "
                            "in the completion). Please reduce the length of the messages or completion.",
                       "context_length_exceeded", "messages")
    return n


async def _sse(chat: ChatModel, req: ChatRequest, model_name: str, prompt_tokens: int, admission: Admission):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop_reading = threading.Event()
    usage: dict = {}

    def chunk(delta: dict, finish=None, usage=None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def work():
        try:
            gen = chat.stream(req.messages, req.images, **req.gen, usage=usage)
            try:
                for piece in gen:
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                    if stop_reading.is_set():
                        break
            finally:
                gen.close()
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
        except BaseException as e:  # reported to the client as an error event
            loop.call_soon_threadsafe(queue.put_nowait, ("error", e))

    thread = threading.Thread(target=work, daemon=True)
    try:
        yield chunk({"role": "assistant", "content": ""})
        thread.start()
        text = ""
        while True:
            kind, value = await queue.get()
            if kind == "piece":
                text += value
                yield chunk({"content": value})
            elif kind == "error":
                err = APIError(400 if isinstance(value, PromptError) else 500, f"{type(value).__name__}: {value}",
                               "generation_failed", type="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
                break
            else:
                yield chunk({}, usage.get("finish_reason", "stop"))
                if req.include_usage:
                    yield chunk({}, usage=_usage(usage.get("prompt_tokens", prompt_tokens),
                                                 usage.get("completion_tokens", chat.count_text_tokens(text))))
                break
        yield "data: [DONE]\n\n"
    finally:
        stop_reading.set()
        admission.leave()
