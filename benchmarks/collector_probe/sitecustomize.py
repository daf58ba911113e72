"""Put first on PYTHONPATH by `make profile`: every Python process of the demo (its main process,
the workers' server, each worker) times the passes of its cyclic garbage collector
(`gc.callbacks`) and keeps its running total in a file of its own under the directory that
COLLECTOR_PROBE_DIRECTORY names. py-spy's samples cannot show this time: a collection runs inside
whatever Python line allocated. Workers leave through `os._exit`, so the file is rewritten as it
goes (at most every 0.2 s) rather than at exit."""

import gc
import os
import time

_DIRECTORY = os.environ.get("COLLECTOR_PROBE_DIRECTORY")
_state = {"seconds": 0.0, "passes": 0, "started": 0.0, "written": 0.0}


def _write() -> None:
    with open(os.path.join(_DIRECTORY, f"{os.getpid()}.txt"), "w") as total:
        total.write(f"{_state['seconds']:.4f} {_state['passes']}\n")


def _on_collection(phase: str, info: dict) -> None:
    now = time.perf_counter()
    if phase == "start":
        _state["started"] = now
        return
    _state["seconds"] += now - _state["started"]
    _state["passes"] += 1
    if now - _state["written"] > 0.2:
        _state["written"] = now
        _write()


def _start_anew_in_child() -> None:  # a forked process counts only its own passes
    _state.update(seconds=0.0, passes=0, written=0.0)


if _DIRECTORY:
    gc.callbacks.append(_on_collection)
    os.register_at_fork(after_in_child=_start_anew_in_child)
