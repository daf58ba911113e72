#!/usr/bin/env bash
# Does this checkout reuse what an earlier revision stored? Runs REV's `make demo` pipeline (REV:
# a commit, tag or branch) into a fresh home, then this checkout's demo against that home, and
# fails unless it plans 0 runs: a change meant to be invisible to users must find the artifact
# store and the MLflow store written before it current.
#
#     scripts/store_compatibility.sh 7cb1979
#
# Uses this checkout's .venv for both (the locked dependencies are the same unless the
# constraints changed between the two; then run it from a venv made for REV).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 1 ] || { echo "usage: $0 REV" >&2; exit 2; }
rev="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git worktree add --quiet --detach "$work/earlier" "$rev"
trap 'git worktree remove --force "$work/earlier"; rm -rf "$work"' EXIT
mkdir "$work/home"
cp "$work/earlier/dagster.yaml" "$work/home/"  # the home as REV made it; this checkout reads its instance too
echo "store_compatibility: $rev's demo into $work/home" >&2
(cd "$work/earlier" && DAGSTER_HOME="$work/home" "$OLDPWD/.venv/bin/python" -m intelligence_assets.cli.demo >"$work/earlier.log" 2>&1) \
    || { tail -20 "$work/earlier.log" >&2; echo "store_compatibility: $rev's demo failed" >&2; exit 1; }
echo "store_compatibility: this checkout's demo on that home" >&2
DAGSTER_HOME="$work/home" .venv/bin/python -m intelligence_assets.cli.demo >"$work/current.log" 2>&1 || true
plan="$(grep -m1 '^Plan' "$work/current.log" || true)"
echo "store_compatibility: $plan" >&2
case "$plan" in
    *" 0 asset partitions need a run"*) echo "store_compatibility: every partition $rev stored is current here" >&2 ;;
    *) echo "store_compatibility: this checkout would rerun partitions $rev stored" >&2; exit 1 ;;
esac
