#!/usr/bin/env bash
# The locked CPU set (constraints/cpu.txt) as binary wheels for another Python on Linux x86_64,
# for a machine that has no registry access (a lent benchmark machine, an air-gapped host),
# split into folders of at most PART_MIB each so that a command which carries a limited size
# can take them over one folder at a time.
#
#   bash scripts/offline_wheels.sh PYTHON_VERSION OUT [PACKAGE_TO_LEAVE_OUT ...]
#   e.g. bash scripts/offline_wheels.sh 3.12 build/wheels-3.12 torch numpy pandas pyarrow scikit-learn \
#       scipy playwright moto ruff cfn-lint kubernetes-validate py-spy   (its own, and test tools)
#
# Leave out what the target machine has already (its own torch build, say). Settings:
#   PART_MIB   largest folder, in MiB (56: one folder and the checkout within a 64 MiB carry)
#   GLIBC      the target's manylinux level, 2_17...  (2_28)
# Writes OUT/part-1, OUT/part-2, ... and OUT/MANIFEST.txt. On the target:
#   python3 -m pip install --no-index --no-deps --target SITE OUT/part-*/*.whl
#   PYTHONPATH=SITE:<checkout> python3 -m benchmarks.overhead ...
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0" >&2
    exit 2
fi
version=$1
out=$2
shift 2
part_mib=${PART_MIB:-56}
glibc=${GLIBC:-2_28}
python=${PYTHON:-.venv/bin/python}

rm -rf "$out"
mkdir -p "$out/all"
# Names compared as pip normalizes them (case, "-", "_" and "." alike).
normalize() { tr 'A-Z_.' 'a-z--'; }
leave_out=$(printf '%s\n' "$@" | normalize)
requirements="$out/requirements.txt"
grep -E '^[A-Za-z0-9]' constraints/cpu.txt | while IFS= read -r line; do
    name=$(printf '%s' "${line%%==*}" | normalize)
    if ! printf '%s\n' "$leave_out" | grep -qxF "$name"; then
        printf '%s\n' "$line"
    fi
done >"$requirements"

# The set is fully resolved already (the constraints file), hence --no-deps. Given --platform,
# pip accepts only the tags named: every manylinux level up to GLIBC, and the legacy aliases.
platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for minor in $(seq 5 "${glibc#2_}"); do
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp "${platforms[@]}" \
    --requirement "$requirements" --dest "$out/all" 2> >(grep -v "is ignored" >&2)

# Largest wheels first, each into the first folder it fits: few folders, none over PART_MIB.
"$python" - "$out" "$part_mib" <<'PYTHON'
import sys
from pathlib import Path

out, limit = Path(sys.argv[1]), int(sys.argv[2]) * 1024 * 1024
wheels = sorted((out / "all").glob("*.whl"), key=lambda wheel: wheel.stat().st_size, reverse=True)
parts: list[tuple[int, list[Path]]] = []
for wheel in wheels:
    size = wheel.stat().st_size
    if size > limit:
        raise SystemExit(f"{wheel.name} alone is {size / 2**20:.0f} MiB, over PART_MIB; raise it or leave it out")
    for index, (used, members) in enumerate(parts):
        if used + size <= limit:
            parts[index] = (used + size, [*members, wheel])
            break
    else:
        parts.append((size, [wheel]))
lines = []
for number, (used, members) in enumerate(parts, start=1):
    folder = out / f"part-{number}"
    folder.mkdir()
    lines.append(f"## part-{number} ({used / 2**20:.1f} MiB)")
    for wheel in sorted(members):
        wheel.rename(folder / wheel.name)
        lines.append(wheel.name)
(out / "all").rmdir()
(out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
print("\n".join(line for line in lines if line.startswith("##")))
PYTHON
