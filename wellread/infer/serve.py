"""``wellread serve``: a JSON prediction service on Starlette + uvicorn, with micro-batching.

Endpoints:
- ``POST /predict``: ``{"inputs": ["text", ...]}``, ``{"inputs": [{"text_a": .., "text_b": ..}, ...]}``, a bare
  list of either, or one object; answers ``{"predictions": [{"label", "probabilities"} | {"score"}, ...]}``
  in input order.
- ``GET /health``: ``{"status": "ok"}``. ``GET /info``: model, labels, backend, limits, counters.

Concurrent requests are gathered into one model call: the first waiting request opens a window of
``max_wait_ms``; requests arriving in it (or already queued) join until ``max_batch`` inputs; the
model then runs once in a worker thread while the event loop keeps accepting and queueing.

Errors are JSON ``{"error": "..."}``: 400 bad JSON (or nested too deeply), 422 a body of the wrong
shape or a text that is not Unicode (a lone surrogate), 413 a body, input count or text over the limits,
404/405 unknown routes. Every input is validated in full before it joins a batch; should a model call
still fail, its requests are retried one by one so that only the one that fails gets the error (a 500
saying "internal error" and nothing of the exception, which goes to the log). A bad request never stops
the service; SIGTERM (or Ctrl-C) stops it cleanly: uvicorn stops accepting, finishes the requests in
flight, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from wellread import __version__
from wellread.infer.stream import item_texts

log = logging.getLogger("wellread.serve")


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how requests are gathered into model calls."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 256
    max_text_chars: int = 10_000
    max_batch: int = 64
    max_wait_ms: float = 5.0


class RequestError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: bytes, limits: Limits) -> tuple[list[str], list[str | None]]:
    """The (texts_a, texts_b) of a /predict body, or RequestError (400, 413, 422)."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise RequestError(400, "invalid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        raise RequestError(400, f"invalid JSON: {e}") from None
    if isinstance(obj, dict) and "inputs" in obj:
        items = obj["inputs"]
        items = items if isinstance(items, list) else [items]
    elif isinstance(obj, list):
        items = obj
    elif isinstance(obj, (dict, str)):
        items = [obj]
    else:
        raise RequestError(422, 'expected {"inputs": [...]}, a list of inputs, or one input')
    if not items:
        raise RequestError(422, "no inputs")
    if len(items) > limits.max_inputs:
        raise RequestError(413, f"{len(items)} inputs; at most {limits.max_inputs} per request")
    texts_a: list[str] = []
    texts_b: list[str | None] = []
    for i, item in enumerate(items):
        try:
            a, b, _ = item_texts(item)
        except ValueError as e:
            raise RequestError(422, f"inputs[{i}] (field {e.args[1]}): {e.args[0]}") from None
        chars = len(a) + len(b or "")
        if chars > limits.max_text_chars:
            raise RequestError(413, f"inputs[{i}] has {chars} characters; at most {limits.max_text_chars}")
        texts_a.append(a)
        texts_b.append(b)
    return texts_a, texts_b


class MicroBatcher:
    """Gathers concurrent requests into one ``predictor.predict`` call, run in one worker thread."""

    def __init__(self, predictor, max_batch: int, max_wait_s: float) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.calls = 0  # model calls made
        self.inputs = 0  # inputs predicted
        self.requests = 0  # requests answered
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wellread-model")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def predict(self, texts_a: list[str], texts_b: list[str | None]) -> list[dict]:
        """This request's predictions, computed together with whatever else is waiting."""
        assert self._queue is not None, "start() first"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts_a, texts_b, future, time.monotonic()))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            group = [await self._queue.get()]
            n = len(group[0][0])
            deadline = group[0][3] + self.max_wait_s  # the window opens when the first request arrived
            while n < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), wait)
                    except asyncio.TimeoutError:
                        break
                group.append(item)
                n += len(item[0])
            group = [g for g in group if not g[2].done()]  # a client that went away has a cancelled future
            if not group:
                continue
            try:
                preds = await self._call(loop, [a for g in group for a in g[0]], [b for g in group for b in g[1]])
            except Exception as e:
                if len(group) == 1:
                    self._answer(group[0][2], exception=e)
                    continue
                # one request's input may have broken the batch: retry each alone, so only that one fails
                for texts_a, texts_b, future, _ in group:
                    try:
                        self._answer(future, await self._call(loop, texts_a, texts_b))
                    except Exception as e1:
                        self._answer(future, exception=e1)
                continue
            start = 0
            for a, _, future, _ in group:
                self._answer(future, preds[start:start + len(a)])
                start += len(a)

    async def _call(self, loop, texts_a: list[str], texts_b: list[str | None]) -> list[dict]:
        preds = await loop.run_in_executor(self._executor, self.predictor.predict, texts_a, texts_b)
        self.calls += 1
        self.inputs += len(texts_a)
        return preds

    def _answer(self, future: asyncio.Future, result: list[dict] | None = None, *,
                exception: Exception | None = None) -> None:
        if future.done():
            return
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
            self.requests += 1


async def _read_body(request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError(400, "bad Content-Length")
        if int(length) > limit:
            raise RequestError(413, f"body of {int(length)} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(predictor, limits: Limits = Limits()):
    """The Starlette application serving ``predictor`` (a ``wellread.infer.Predictor``)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    batcher = MicroBatcher(predictor, limits.max_batch, limits.max_wait_ms / 1000)

    async def predict(request):
        try:
            body = await _read_body(request, limits.max_body_bytes)
            texts_a, texts_b = parse_request(body, limits)
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        return JSONResponse({"predictions": await batcher.predict(texts_a, texts_b)})

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def info(request):
        described = predictor.describe()
        described["model"] = Path(described["model"]).name  # never the server's file layout
        return JSONResponse({**described, "version": __version__, "limits": asdict(limits),
                             "served": {"requests": batcher.requests, "inputs": batcher.inputs,
                                        "model_calls": batcher.calls}})

    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def server_error(request, exc: Exception):
        # the exception (and its text, which may hold paths or other clients' inputs) goes to the log only
        log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                            Route("/info", info)],
                    exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(predictor, *, host: str = "127.0.0.1", port: int = 8080, limits: Limits = Limits(),
          log_level: str = "info", access_log: bool = False) -> None:
    """Run the service until SIGTERM / SIGINT (uvicorn's graceful shutdown)."""
    import uvicorn

    config = uvicorn.Config(create_app(predictor, limits), host=host, port=port, log_level=log_level,
                            access_log=access_log, lifespan="on", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()
