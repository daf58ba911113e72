#!/usr/bin/env bash
# Builds the user-code image (`make image`) with podman, or docker when podman is not on PATH.
#
# Offline by default: the Python packages come from wheelhouse/, downloaded on the host with the
# exact versions of constraints/cpu.txt, so the build runs no pip against a registry inside the
# container. The base image is BASE_IMAGE when it is present or can be pulled; otherwise a Debian
# bookworm base with Python 3.11 is made here with debootstrap from a Debian mirror (a minute),
# once, and kept as localhost/intelligence-assets-base:bookworm.
#
# Settings (all optional):
#   IMAGE           the tag built                            (localhost/intelligence-assets:dev)
#   BASE_IMAGE      the base tried first                     (python:3.11-slim)
#   DEBIAN_MIRROR   where debootstrap fetches the local base (http://deb.debian.org/debian)
#   EXTRA           the package extra: cpu, or gpu with TORCH_INDEX_URL=https://pypi.org/simple
#   CONTAINER_ENGINE  podman or docker                       (podman if on PATH)
#   BUILD_OPTIONS   more options for the engine's build, e.g. --no-cache
# Prints the image's size and the build's duration; the image id goes to build/image.id.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/intelligence-assets:dev}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
LOCAL_BASE=localhost/intelligence-assets-base:bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
EXTRA="${EXTRA:-cpu}"
PYTHON="${PYTHON:-.venv/bin/python}"

log() { printf 'build_image: %s\n' "$*" >&2; }
fail() { log "$*"; exit 1; }

ENGINE="${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}"
[ -n "$ENGINE" ] || fail "neither podman nor docker is on PATH (Debian: apt-get install podman runc)"
# shellcheck source=scripts/container_engine.sh
source scripts/container_engine.sh

started=$(date +%s)

base="$BASE_IMAGE"
if ! "$ENGINE" image exists "$base" 2>/dev/null && ! "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
    if "$ENGINE" pull -q "$base" >/dev/null 2>&1; then
        log "pulled $base"
    else
        log "$base cannot be pulled here; using a Debian bookworm base made with debootstrap"
        base="$LOCAL_BASE"
        if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
            [ "$(id -u)" = 0 ] || fail "debootstrap needs root; or set BASE_IMAGE to an image with Python 3.11 you can pull"
            bash scripts/install_debian_package.sh debootstrap /usr/sbin/debootstrap \
                || fail "debootstrap is needed to make a base image; or set BASE_IMAGE to an image you can pull"
            root="$(mktemp -d)"
            trap 'rm -rf "$root"' EXIT
            log "debootstrap bookworm from $DEBIAN_MIRROR (about a minute)"
            debootstrap --variant=minbase --include=python3,python3-venv,libgomp1,ca-certificates \
                bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
            # No package lists or caches in the image: nothing installs from them later.
            rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
            tar -C "$root" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
            rm -rf "$root"
            trap - EXIT
        fi
    fi
fi

torch_index=https://download.pytorch.org/whl/cpu
[ "$EXTRA" = gpu ] && torch_index=https://pypi.org/simple
torch_index="${TORCH_INDEX_URL:-$torch_index}"
# One folder per build: the CPU and CUDA builds of torch share a version number.
wheels="wheelhouse/$EXTRA"
mkdir -p "$wheels"
download() {
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$wheels" --only-binary :all: \
        --constraint constraints/cpu.txt "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
log "wheelhouse: torch 2.13.0 ($EXTRA build) and .[$EXTRA] at the constraints' versions"
# torch's two builds share a version number: keep only the one asked for, and hand that very file
# to the second download, so that resolving `.[$EXTRA]` cannot take the other build from a mirror.
if [ "$EXTRA" = gpu ]; then rm -f "$wheels"/torch-2.13.0+cpu-*.whl; else rm -f "$wheels"/torch-2.13.0-*.whl; fi
# torch from its own index alone (no configured mirror or wheel folder may slip the other build
# in); where that index is unreachable, from pip's own configuration (a mirror, a wheel on disk).
if ! PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" download --retries 0 --timeout 10 --index-url "$torch_index" \
    torch==2.13.0 2>/dev/null; then
    log "$torch_index is unreachable; torch from pip's configured sources"
    download torch==2.13.0
fi
if [ "$EXTRA" = cpu ]; then torch_wheels=("$wheels"/torch-2.13.0+cpu-*.whl); else torch_wheels=("$wheels"/torch-2.13.0-*.whl); fi
[ -f "${torch_wheels[0]}" ] || fail "no $EXTRA build of torch 2.13.0 in $wheels/ (PyPI's default wheel is the CUDA build); set TORCH_INDEX_URL"
download "${torch_wheels[0]}" ".[$EXTRA]" 'setuptools>=69' wheel
if [ "$EXTRA" = gpu ] && compgen -G "$wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    fail "the CPU build of torch reached $wheels/; the GPU image needs the CUDA build"
fi

read -r git_commit git_dirty < <("$PYTHON" -c 'from intelligence_assets.config.code_revision import code_revision
revision = code_revision()
print(revision.commit or "-", str(revision.dirty).lower())')
[ "$git_commit" = - ] && git_commit=""
log "building $IMAGE from $base with $ENGINE (commit ${git_commit:-unknown}, uncommitted changes: $git_dirty)"
mkdir -p build
previous="$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
# shellcheck disable=SC2086 # BUILD_OPTIONS is a list of options
"$ENGINE" build "${ENGINE_BUILD_OPTIONS[@]}" ${BUILD_OPTIONS:-} --build-arg BASE_IMAGE="$base" --build-arg EXTRA="$EXTRA" \
    --build-arg TORCH_INDEX_URL="$torch_index" --build-arg OFFLINE=1 \
    --build-arg GIT_COMMIT="$git_commit" --build-arg GIT_DIRTY="$git_dirty" --iidfile build/image.id -t "$IMAGE" .

# The image this tag named before would stay behind untagged (gigabytes a build): remove it
# unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    "$ENGINE" rmi "$previous" >/dev/null 2>&1 || true
fi
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE: $((size / 1000000)) MB in $(( $(date +%s) - started )) s"
