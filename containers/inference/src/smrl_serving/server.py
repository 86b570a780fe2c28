"""`serve`: start the model server the way SageMaker expects.

uvicorn (httptools parser with read deadlines, uvloop event loop) with one process per worker. Each worker
imports MXNet and loads the model itself, after the process starts: MXNet's engine
threads do not survive fork, and loading in the worker is what makes /ping mean "ready".
Measured on 2 cores against gunicorn (sync and gthread workers), see the image's README.

Environment (SageMaker's names):
  SAGEMAKER_BIND_TO_PORT          port to listen on (default 8080)
  SAGEMAKER_MODEL_SERVER_WORKERS  worker processes (default: CPUs this container may use)
  SAGEMAKER_MODEL_SERVER_TIMEOUT  seconds one request may take (default 60; 504 after)
  SAGEMAKER_CONTAINER_LOG_LEVEL   logging level, number or name (default INFO)
  OMP_NUM_THREADS                 OpenMP threads per worker (default 1: fastest for small nets)
  MXNET_ENGINE_TYPE               MXNet engine (default NaiveEngine: synchronous, fastest here)
"""
from __future__ import annotations

import logging
import os
import sys

import smrl_contract as contract
from smrl_serving.limits import BACKLOG, CONNECTION_LIMIT, KEEP_ALIVE_S


def worker_count(environ=os.environ) -> int:
    configured = environ.get(contract.WORKERS_ENV)
    if configured:
        return max(1, int(configured))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def log_level(environ=os.environ) -> str:
    value = (environ.get(contract.LOG_LEVEL_ENV) or "INFO").strip()
    return logging.getLevelName(int(value)) if value.isdigit() else value.upper()


def log_config(level: str) -> dict:
    """dictConfig applied in every worker (spawned processes do not inherit logging setup)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": "WARNING"},
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":  # `python -m smrl_serving.server serve` works as well
        argv = argv[1:]
    if argv:
        print(f"usage: serve  (configure with environment variables; got {argv})", file=sys.stderr)
        return 2
    # MXNet reads these when it is imported, in each worker: set them before spawning.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
    # Synchronous engine: no hand-off to engine threads, ~10% faster per request on tiny nets.
    os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")
    import logging.config

    import uvicorn

    port = int(os.environ.get(contract.BIND_TO_PORT_ENV) or contract.SERVING_PORT)
    workers = worker_count()
    level = log_level()
    logging.config.dictConfig(log_config(level))
    logging.getLogger("smrl_serving").info("serving on port %d with %d worker(s)", port, workers)
    uvicorn.run(
        "smrl_serving.app:create_app", factory=True,
        host="0.0.0.0", port=port, workers=workers,
        http="smrl_serving.protocol:GuardedHttpToolsProtocol", loop="uvloop", lifespan="on",
        limit_concurrency=CONNECTION_LIMIT, backlog=BACKLOG,
        log_config=log_config(level), log_level=level.lower(), access_log=False,
        server_header=False, date_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=contract.GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
