"""Long-lived processes that run many steps: what they import ahead, the threads they may use, and
how their garbage collector treats what they imported.

Two kinds: `make demo`'s workers (each runs whole runs in-process) and the forkserver of Dagster's
multiprocess executor (it forks one process per step). Either way the definitions, and for
training the heavy libraries, are imported once per process instead of once per run or step.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import dagster as dg

from intelligence_assets.config.universe import Universe

DEFINITIONS_MODULE = "intelligence_assets.definitions"


def worker_libraries(universe: Universe, tracking: bool = True) -> tuple[str, ...]:
    """What training imports on first use: the ranking's quick models (selection uses LightGBM,
    one of them), every family of the universe, and with `tracking` MLflow's."""
    from intelligence_assets.ml.families import libraries_of
    from intelligence_assets.ml.ranking import RANKING_MODELS
    from intelligence_assets.tracking.tracker import LIBRARIES

    return (*libraries_of([*RANKING_MODELS, *universe.model_families]), *(LIBRARIES if tracking else ()))


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's cpuset), which
    `os.cpu_count()` ignores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_threads(workers: int) -> int:
    """Threads each of `workers` processes' native libraries may use: its share of the cores."""
    return max(1, available_cores() // workers)


def prepare_worker(libraries: tuple[str, ...], threads: int) -> None:
    """Import `libraries` now (sklearn, torch and MLflow take seconds each), then cap their
    thread pools at `threads`.

    Every OpenMP and BLAS pool sizes itself to the whole machine. With a worker per core, each
    worker's idle threads spin on cores the other worker is using: target ranking ran 2-3x
    slower with two workers on two cores than with one thread each.
    """
    from threadpoolctl import threadpool_limits

    for module in libraries:
        importlib.import_module(module)
    threadpool_limits(limits=threads)


# What every pool's forkserver imports besides the pool's own `libraries`: third-party modules
# only, which read no environment at import. Our own modules read the universe and the deployment
# from the environment when imported, so each worker imports them itself (see `forked_pool`).
SHARED_LIBRARIES = ("dagster", "polars", "pyarrow")
# Imported before anything else by each fork server; its docstring says why.
FORK_SERVER_PRELOAD = "intelligence_assets.defs.fork_server_preload"


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while the block imports and loads what the
    process keeps for its whole life, then freezes everything alive (later collections skip
    frozen objects) and resumes collecting: what `fork_server_preload` does for a fork server's
    children, for a process that starts itself."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def forked_pool(
    workers: int,
    libraries: tuple[str, ...],
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """`workers` processes forked from one server that has imported `SHARED_LIBRARIES` and
    `libraries` once; each then
    runs `initializer(*initargs)` (a module-level function: it travels pickled).

    Spawned workers would each import torch, sklearn, LightGBM and MLflow again: about 6 s of CPU
    per worker, on cores the other workers need. The server starts now, not at the first task, so
    its imports overlap with whatever the caller does next. Queueing the pool's first task waits
    until the server has finished importing. The server only imports: forking is unsafe after
    OpenMP has started its threads (a parallel region), not after its library was loaded.

    A process has one forkserver, started by its first pool with that pool's `libraries` (a
    later pool's list applies only if the server has stopped), and the server keeps the
    environment it started with. So `libraries` must be third-party modules that read no
    environment at import, and every worker takes this process's environment as it is now.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([FORK_SERVER_PRELOAD, *SHARED_LIBRARIES, *libraries])
    multiprocessing.forkserver.ensure_running()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(dict(os.environ), initializer, initargs),
    )


def _start_worker(
    environment: dict[str, str], initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    os.environ.clear()
    os.environ.update(environment)
    if initializer is not None:
        with collector_paused():  # what the initializer loads stays for all the worker's tasks
            initializer(*initargs)


def step_process_executor(name: str, preload: tuple[str, ...] = ()) -> dg.ExecutorDefinition:
    """Dagster's multiprocess executor with each step forked from a server that has imported the
    definitions and `preload` once. Its default, spawn, starts every step in a fresh interpreter
    that imports them again: 1-2 s for the definitions, seconds more for torch or sklearn."""
    start_method = {"forkserver": {"preload_modules": [FORK_SERVER_PRELOAD, DEFINITIONS_MODULE, *preload]}}
    return dg.multiprocess_executor.configured({"start_method": start_method}, name=name)
