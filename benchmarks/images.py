"""Size and build time of the user-code image: a cold build (no layer cache, base already made)
and a rebuild after a code-only change (a file under intelligence_assets/ touched).

    make bench-image        (podman or docker on PATH; see scripts/build_image.sh)

Writes benchmarks/results/images.md and its figures into benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.machine import describe_machine
from benchmarks.summary import record

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY_ROOT / "benchmarks" / "results"
# A code-only change: a file the image copies with the package, written for the rebuild and removed.
CHANGED = REPOSITORY_ROOT / "intelligence_assets" / "_code_only_change.py"
SI_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def build(image: str, *, no_cache: bool) -> float:
    environment = {**os.environ, "IMAGE": image}
    if no_cache:
        environment["BUILD_OPTIONS"] = "--no-cache"
    started = time.monotonic()
    subprocess.run(["bash", "scripts/build_image.sh"], cwd=REPOSITORY_ROOT, env=environment, check=True)
    return time.monotonic() - started


def engine() -> str:
    found = os.environ.get("CONTAINER_ENGINE") or shutil.which("podman") or shutil.which("docker")
    if not found:
        raise SystemExit("neither podman nor docker is on PATH")
    return found


def layer_sizes(image: str) -> list[tuple[int, str]]:
    history = subprocess.run(
        [engine(), "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    layers = []
    for line in history.splitlines():
        size, _, created_by = line.partition("\t")
        number, unit = size.split()
        layers.append((int(float(number) * SI_UNITS[unit]), " ".join(created_by.split())[:100]))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="localhost/intelligence-assets:bench")
    arguments = parser.parse_args()

    cold = build(arguments.image, no_cache=True)
    build(arguments.image, no_cache=False)  # the layer cache now holds this tree's layers
    CHANGED.write_text(f"# {time.time()}\n")
    try:
        code_only = build(arguments.image, no_cache=False)
    finally:
        CHANGED.unlink()
    size = int(
        subprocess.run(
            [engine(), "image", "inspect", "--format", "{{.Size}}", arguments.image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    layers = sorted(layer_sizes(arguments.image), reverse=True)[:5]
    machine = describe_machine()
    table = [
        "| measure | value |",
        "| --- | --- |",
        f"| image size | {size / 1e6:,.0f} MB |",
        f"| cold build (no layer cache; base image present) | {cold:.0f} s |",
        f"| rebuild after a code-only change | {code_only:.0f} s |",
    ]
    largest = [
        "| layer | size |",
        "| --- | --- |",
        *(f"| `{text}` | {bytes_ / 1e6:,.0f} MB |" for bytes_, text in layers),
    ]
    (RESULTS / "images.md").write_text(
        "# The user-code image\n\n"
        f"`make bench-image` with {Path(engine()).name}, on {machine}.\n\n"
        + "\n".join(table)
        + "\n\nLargest layers:\n\n"
        + "\n".join(largest)
        + "\n"
    )
    engine_name = Path(engine()).name
    record(f"user-code image size, MB ({engine_name})", size / 1e6, goal=None, better="lower", machine=machine)
    record(f"user-code image cold build, s ({engine_name})", cold, goal=None, better="lower", machine=machine)
    record(
        f"user-code image rebuild after a code-only change, s ({engine_name})",
        code_only,
        goal=None,
        better="lower",
        machine=machine,
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
