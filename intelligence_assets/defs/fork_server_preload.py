"""Imported first by every fork server of ours (`processes.forked_pool`,
`processes.step_process_executor`): its import pauses Python's cyclic garbage collector for the
imports that follow, and every process the server forks then freezes what it inherited and
collects again.

This is the pattern the `gc` module's documentation gives for fork without exec. What a server
imports (Dagster, torch, MLflow, the definitions) is hundreds of thousands of objects that live as
long as each child; collecting them during the imports, and again in every full collection of
every child, finds nothing to free. Frozen, they are also left alone in the memory pages the
children share with the server. A fork server runs nothing of ours but imports, so the import is
the whole of this module's effect; the module imports nothing but the standard library.
"""

import gc
import os


def _collect_again_in_child() -> None:
    gc.freeze()
    gc.enable()


gc.disable()
os.register_at_fork(after_in_child=_collect_again_in_child)
