# Options for podman or docker ($ENGINE), sourced by the image scripts.
# podman: runc, since crun cannot manage this kind of host's cgroups (v1), and fixed limits, since
# raising podman's default ones is refused in unprivileged sandboxes. docker needs neither.
ENGINE_RUN_OPTIONS=()
ENGINE_BUILD_OPTIONS=()
if [ "$(basename "$ENGINE")" = podman ]; then
    limits=(--ulimit nofile=10000:10000 --ulimit nproc=10000:10000)
    if command -v runc >/dev/null; then
        ENGINE_RUN_OPTIONS=(--runtime runc "${limits[@]}")
        ENGINE_BUILD_OPTIONS=(--runtime runc "${limits[@]}")
    else
        ENGINE_RUN_OPTIONS=("${limits[@]}")
        ENGINE_BUILD_OPTIONS=("${limits[@]}")
    fi
fi
