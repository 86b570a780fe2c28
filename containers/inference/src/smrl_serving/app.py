"""The ASGI application: GET /ping, POST /invocations, GET /execution-parameters.

One `Service` per worker process loads the user module and the model before the worker
accepts connections (so /ping is 200 only once the model is in memory). Requests run
inline on the worker's event loop: the policies served here take well under a
millisecond, and handing them to a thread pool would cost more than they do. Several
worker processes give the parallelism.

Errors never take the worker down: every failure becomes a response (plain-text body,
the status from `errors`), and unexpected ones log their traceback.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager

import smrl_contract as contract
from smrl_serving.errors import InferenceError, InferenceTimeout, ModelNotLoaded, PayloadTooLarge
from smrl_serving.handlers import MODEL_DIR, Transformer, import_user_module

log = logging.getLogger("smrl_serving")

TEXT = b"text/plain; charset=utf-8"


class Service:
    """The model and its handlers for this worker, or the reason they failed to load."""

    def __init__(self, environ=os.environ):
        self.timeout = float(environ.get(contract.TIMEOUT_ENV) or contract.DEFAULT_TIMEOUT_SECONDS)
        self.transformer: Transformer | None = None
        self.load_error: str | None = None
        started = time.monotonic()
        try:
            module = import_user_module(environ)
            self.transformer = Transformer(MODEL_DIR, module,
                                           environ.get(contract.DEFAULT_ACCEPT_ENV) or contract.JSON)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            log.exception("loading the model failed; /ping answers 503 until the container is restarted")
            self.load_error = f"Model failed to load: {type(error).__name__}: {error}"
            return
        user = ", ".join(self.transformer.user_functions) or "none (all defaults)"
        log.info("worker %d ready in %.2f s (user functions: %s)", os.getpid(), time.monotonic() - started, user)

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[int, bytes, bytes]:
        if self.transformer is None:
            raise ModelNotLoaded(self.load_error)
        with deadline(self.timeout):
            payload, media = self.transformer.transform(body, content_type, accept)
        return 200, payload, media.encode("latin-1")


@contextmanager
def deadline(seconds: float):
    """Raises InferenceTimeout in the request's code after `seconds` (main thread only).

    SIGALRM interrupts Python code (a stuck user loop, a sleep); a single long native call
    is interrupted when it returns.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise InferenceTimeout(f"Inference took longer than {contract.TIMEOUT_ENV}={seconds:g} s.")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def create_app(environ=os.environ):
    """The ASGI callable (uvicorn calls this factory once in each worker process)."""
    service = Service(environ)
    from smrl_serving.server import worker_count

    # SageMaker batch transform asks for this before sending work.
    execution_parameters = json.dumps({"MaxConcurrentTransforms": worker_count(environ),
                                       "BatchStrategy": "MULTI_RECORD",
                                       "MaxPayloadInMB": contract.MAX_PAYLOAD_BYTES // (1024 * 1024)}).encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await _lifespan(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                return await _respond(send, 405, b"Use POST /invocations.", TEXT, allow=b"POST")
            answer = await _invocations(service, scope, receive)
            if answer is None:
                return None
            return await _respond(send, *answer)
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return await _respond(send, 405, b"Use GET /ping.", TEXT, allow=b"GET, HEAD")
            if service.transformer is None:
                return await _respond(send, 503, service.load_error.encode(), TEXT)
            return await _respond(send, 200, b"", TEXT)
        if path == "/execution-parameters" and method == "GET":
            return await _respond(send, 200, execution_parameters, b"application/json")
        return await _respond(send, 404, f"No route {method} {path}: use GET /ping, POST /invocations.".encode(), TEXT)

    return app


async def _lifespan(scope, receive, send) -> None:
    """Nothing to do at start-up or shutdown: the model loaded with the app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


async def _invocations(service: Service, scope, receive) -> tuple[int, bytes, bytes] | None:
    content_type = accept = None
    length = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"accept":
            accept = value.decode("latin-1")
        elif name == b"content-length":
            length = int(value) if value.isdigit() else None
    try:
        if length is not None and length > contract.MAX_PAYLOAD_BYTES:
            # Rejected before reading the body; uvicorn discards the rest of it.
            raise PayloadTooLarge(_too_large(length))
        body = await _read_body(receive)
        if body is None:  # the client left (or was closed for a stalled body): nobody to answer
            return None
        return service.invoke(body, content_type, accept)
    except InferenceError as error:
        if error.status >= 500:
            log.error("%s", error)
        return error.status, str(error).encode(), TEXT
    except (Exception, SystemExit) as error:
        log.exception("inference failed")
        return 500, f"{type(error).__name__}: {error}".encode(), TEXT


async def _read_body(receive) -> bytes | None:
    """The request body, or None when the client disconnected before sending all of it."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > contract.MAX_PAYLOAD_BYTES:  # chunked uploads have no Content-Length
            raise PayloadTooLarge(_too_large(size, at_least=True))
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, at_least: bool = False) -> str:
    return (f"Request body of {'more than ' if at_least else ''}{size} bytes is over the "
            f"{contract.MAX_PAYLOAD_BYTES} byte (6 MB) limit of SageMaker endpoints.")


async def _respond(send, status: int, body: bytes, media: bytes, allow: bytes | None = None) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
