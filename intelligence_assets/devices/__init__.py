"""Which GPUs this host may train on (`inventory.py`) and which one each training step gets
(`leases.py`): Dagster's multiprocess executor runs every step in its own process, and several runs
side by side, so without a host-wide lease every GPU step would land on GPU 0. A step leases a
(GPU, slot) held by a file lock the kernel drops when the process dies, and exposes only that GPU
through CUDA_VISIBLE_DEVICES before a library initialises CUDA. Free of Dagster."""
