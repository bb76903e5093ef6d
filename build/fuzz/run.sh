#!/usr/bin/env bash
# Runs every Go fuzz target of the tree (each `func FuzzX` in a *_test.go,
# found anew on every run) for a bounded time, one `go test -fuzz` per target
# (Go fuzzes one target of one package at a time). Prints each target's exec
# count; fails when any target fails, after running them all. A failing input
# is left where Go writes it, testdata/fuzz/FuzzX/ of the package: commit it
# with the fix as a regression seed (bazel test runs it too).
#
# Go is the toolchain root's (build/offline, set up by tools/bazel), entered
# like tools/bazel does, so the same Go runs everywhere; modules come from
# the Go module proxy as for Bazel (GOPROXY, else the host Go's, else Go's
# default).
#
# Usage: build/fuzz/run.sh [SECONDS_PER_TARGET]   (default 20)
set -euo pipefail

ws=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() {
  echo "build/fuzz/run.sh: error: $*" >&2
  exit 1
}

# run_targets SECONDS: inside the root, in the workspace.
run_targets() {
  local seconds=$1 files file dir name out execs failed=() count=0
  mapfile -t files < <(find . \( -name 'bazel-*' -o -name testdata -o -name .git -o -name node_modules \) -prune -o \
    -name '*_test.go' -type f -print | LC_ALL=C sort)
  for file in "${files[@]}"; do
    dir=$(dirname "$file")
    for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
      count=$((count + 1))
      echo "--- $name ($dir), ${seconds}s"
      # Minimizing a new input may take 60 s by default: the whole budget.
      if out=$(go test "$dir" -run='^$' -fuzz="^$name\$" -fuzztime="${seconds}s" -fuzzminimizetime=1s 2>&1); then
        execs=$(grep -oE 'execs: [0-9]+' <<<"$out" | tail -1 | cut -d' ' -f2 || true)
        echo "$name: ${execs:-?} execs, passed"
      else
        echo "$out"
        echo "$name: FAILED (the failing input is under $dir/testdata/fuzz/$name/)"
        failed+=("$name")
      fi
    done
  done
  ((count > 0)) || die "no fuzz targets found under $ws"
  echo "fuzz: $count targets, ${#failed[@]} failed${failed:+: ${failed[*]}}"
  ((${#failed[@]} == 0))
}

if [[ ${1:-} == --inside ]]; then
  run_targets "$2"
  exit
fi

seconds=${1:-20}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "SECONDS_PER_TARGET must be a positive number, not '$seconds'"
[[ $(id -u) == 0 ]] || die "must run as root: it enters the toolchain root with chroot"
cache=${APPLIANCE_CACHE:-/var/cache/appliance-build}
root="$cache/toolroot"
go_minor=$(awk '$1 == "go" { split($2, v, "."); print v[1] "." v[2]; exit }' "$ws/go.mod")
[[ -x $root/usr/lib/go-$go_minor/bin/go ]] ||
  die "no Go $go_minor in the toolchain root $root: run tools/bazel (e.g. tools/bazel version) first, which sets it up"

if [[ -z ${GOPROXY:-} ]] && command -v go >/dev/null; then
  GOPROXY=$(go env GOPROXY 2>/dev/null || true)
  export GOPROXY
fi
# Module and build caches outside the root, which stays as the setup made it.
gocache="$cache/fuzz-go"
mkdir -p "$gocache"
# The fuzz inputs of some targets are written as files: on tmpfs, not on a
# disk busy with builds, which is many times slower.
tmp=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && tmp=/dev/shm

start=$SECONDS
status=0
TOOLROOT_PATH="/usr/lib/go-$go_minor/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  unshare --mount --propagation private "$ws/build/offline/enter.sh" "$root" "$ws" "$ws" "$gocache" -- \
  env GOFLAGS=-mod=mod GOTOOLCHAIN=local GOCACHE="$gocache/build" GOMODCACHE="$gocache/mod" TMPDIR="$tmp" \
  bash "$ws/build/fuzz/run.sh" --inside "$seconds" || status=$?
echo "fuzz: took $((SECONDS - start)) s"
exit "$status"
