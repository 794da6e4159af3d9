"""`roleforge api`: the HTTP face of the serving service. OpenAI-compatible chat completions (a role is a model),
feedback on what was served, the rater page, health and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from roleforge.data_contracts.feedback import preference_choice
from roleforge.data_contracts.feedback_spellings import thumbs_rating
from roleforge.serving.engine import Job
from roleforge.serving.ledger import FeedbackError
from roleforge.serving.scheduler import QueueFull
from roleforge.serving.service import Conversation, Service

MAX_TEXT_CHARS = 32_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.headers = status, message, kind, param, headers


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _text(cls, content: str | list[dict[str, Any]]) -> str:
        if isinstance(content, list):  # content parts: only text parts carry anything a text model can read
            if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in content):
                raise ValueError("only text content parts are supported")
            content = "".join(part["text"] for part in content)
        if len(content) > MAX_TEXT_CHARS:
            raise ValueError(f"longer than {MAX_TEXT_CHARS} characters")
        return content


class ChatRequest(BaseModel):
    # Clients send many optional OpenAI fields; those that change nothing here are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    adapter_id: str | None = Field(default=None, description="The role to answer as; wins over `model`.")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1, description="One answer per request (A/B serving decides when there are two).")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=256)
    rating: int | None = Field(default=None, ge=1, le=5, strict=True)
    preference: Literal["a", "b"] | None = None
    rater: str | None = Field(default=None, max_length=256)
    comment: str | None = Field(default=None, max_length=4000)

    _choice = field_validator("preference", mode="before")(preference_choice)
    _thumbs = field_validator("rating", mode="before")(thumbs_rating)  # a chat UI's thumbs: "up" is 5, "down" 1


def create_app(service: Service, api_keys: frozenset[str] = frozenset(), start: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start:
            service.start(background=True)
        yield
        service.close()

    app = FastAPI(title="roleforge", lifespan=lifespan, docs_url=None, redoc_url=None)

    def authorized(request: Request) -> None:
        if not api_keys:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in api_keys):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)", "authentication_error")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": error.message, "type": error.kind, "param": error.param, "code": None}},
                            status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return JSONResponse({"error": {"message": f"{where or 'body'}: {first['msg']}", "type": "invalid_request_error",
                                       "param": where or None, "code": None}}, status_code=422)

    def ready() -> None:
        if not service.ready:
            raise ApiError(503, service.load_error or "the model is still loading", "server_error", headers={"Retry-After": "5"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"status": "error" if service.load_error else "loading", "error": service.load_error},
                                status_code=503)
        return JSONResponse({"status": "ok", "roles": len(service.settings.roles), "queue_depth": service.scheduler.depth,
                             "registry_error": service.watch.last_error if service.watch else None})

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def rater_page() -> HTMLResponse:
        return HTMLResponse(resources.files("roleforge.serving").joinpath("static/rater.html").read_text(encoding="utf-8"))

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": service.models()}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        ready()
        name = body.adapter_id or body.model
        try:
            role = service.resolve_role(name)
        except KeyError:
            raise ApiError(404, f"unknown model {name!r}: a role name (see /v1/models)", param="model") from None
        try:
            conversation = service.conversation(role, [m.model_dump() for m in body.messages])
        except ValueError as error:
            raise ApiError(422, str(error), param="messages") from None
        limit = service.config.max_tokens_limit
        max_new = body.max_completion_tokens or body.max_tokens or service.config.max_new_tokens
        if max_new > limit:
            raise ApiError(422, f"max_tokens {max_new} is more than this server's limit of {limit}", param="max_tokens")
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        jobs = service.jobs(conversation, max_new, body.temperature or 0.0, body.top_p or 1.0, stop)
        started = time.perf_counter()
        if body.stream:
            return StreamingResponse(stream(conversation, jobs, started), media_type="text/event-stream")
        try:
            futures = service.submit(jobs)
        except QueueFull as error:
            service.metrics.requests.labels(role, "429").inc()
            raise ApiError(429, f"busy: {error}", "rate_limit_error", headers={"Retry-After": "1"}) from None
        done = [await asyncio.wrap_future(future) for future in futures]
        served = service.record(service.new_id(), conversation, done)
        observe(role, "200", started)
        return JSONResponse(completion(served.id, role, done))

    def observe(role: str, status: str, started: float) -> None:
        service.metrics.requests.labels(role, status).inc()
        service.metrics.latency.labels(role).observe(time.perf_counter() - started)

    async def stream(conversation: Conversation, jobs: list[Job], started: float) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for index, job in enumerate(jobs):
            job.on_text = lambda text, i=index: loop.call_soon_threadsafe(deltas.put_nowait, (i, text))
        response_id, role, created = service.new_id(), conversation.role, int(time.time())
        try:
            futures = service.submit(jobs)
        except QueueFull as error:
            # The status line is sent already: the error travels as an event, as OpenAI's streaming errors do.
            service.metrics.requests.labels(role, "429").inc()
            yield sse({"error": {"message": f"busy: {error}", "type": "rate_limit_error", "code": 429}})
            return

        def chunk(index: int, delta: dict[str, str], finish: str | None = None) -> str:
            return sse({"id": response_id, "object": "chat.completion.chunk", "created": created, "model": role,
                        "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

        for index in range(len(jobs)):
            yield chunk(index, {"role": "assistant", "content": ""})
        pending = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        while not pending.done() or not deltas.empty():
            getter = asyncio.ensure_future(deltas.get())
            await asyncio.wait({getter, pending}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                index, text = getter.result()
                yield chunk(index, {"content": text})
            else:
                getter.cancel()
        done = pending.result()
        served = service.record(response_id, conversation, done)
        for index, job in enumerate(done):
            yield chunk(index, {}, job.finish_reason)
        yield sse({"id": served.id, "object": "chat.completion.chunk", "created": created, "model": role, "choices": [],
                   "usage": usage(done), "roleforge": roleforge_fields(done)})
        observe(role, "200", started)
        yield "data: [DONE]\n\n"

    @app.post("/v1/feedback", dependencies=[Depends(authorized)])
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(service.feedback, body.response_id, body.rating, body.preference, body.rater,
                                           body.comment)
        except KeyError:
            raise ApiError(404, f"no served response has id {body.response_id!r}", param="response_id") from None
        except FeedbackError as error:
            raise ApiError(422, str(error)) from None

    return app


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(jobs: list[Job]) -> dict[str, int]:
    prompt, completion_tokens = jobs[0].prompt_tokens, sum(job.completion_tokens for job in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def roleforge_fields(jobs: list[Job]) -> dict[str, Any]:
    """Which model answered: the champion's registry version (None: the base model). An A/B response does not say
    which answer came from which model: the choice stays blind."""
    return {"ab": len(jobs) == 2, "version": jobs[0].version if len(jobs) == 1 else None}


def completion(response_id: str, role: str, jobs: list[Job]) -> dict[str, Any]:
    return {"id": response_id, "object": "chat.completion", "created": int(time.time()), "model": role,
            "choices": [{"index": i, "message": {"role": "assistant", "content": job.text}, "finish_reason": job.finish_reason}
                        for i, job in enumerate(jobs)],
            "usage": usage(jobs), "roleforge": roleforge_fields(jobs)}
