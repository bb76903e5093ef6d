#!/usr/bin/env bash
# Reproducibility check: builds the release archive and its inputs (kernel,
# both initramfs variants, and the preseed tree they hold: slim bundles and
# the EROFS layer cache with its dm-verity trees) in the normal output base
# and again in a fresh output base with no disk cache, so every action runs
# again, and compares the outputs byte for byte. Prints the sha256 of each
# output; fails on any difference.
set -euo pipefail

ws=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ws"
targets=(
  //images:preseed_tar
  //images/appliance:kernel
  //images/appliance:initramfs
  //images/appliance:initramfs_e2e
  //images/release
)
cache=${APPLIANCE_CACHE:-/var/cache/appliance-build}
second="$cache/bazel/repro-check-$$"
cleanup() {
  tools/bazel --output_base="$second" shutdown >/dev/null 2>&1 || true
  rm -rf --one-file-system "$second"
}
trap cleanup EXIT

# outputs STARTUP_FLAG... -- BUILD_FLAG...: builds the targets, then prints
# the path of each one's output file, in the order of targets.
outputs() {
  local startup=() root t
  while (($#)) && [[ $1 != -- ]]; do
    startup+=("$1")
    shift
  done
  shift
  tools/bazel "${startup[@]}" build "$@" "${targets[@]}" >&2
  root=$(tools/bazel "${startup[@]}" info execution_root 2>/dev/null)
  for t in "${targets[@]}"; do
    echo "$root/$(tools/bazel "${startup[@]}" cquery --output=files "$t" 2>/dev/null)"
  done
}

mapfile -t first_files < <(outputs --)
# No disk cache: every action of the second build runs again. It leaves the
# workspace's bazel-bin and bazel-out alone: they keep pointing into the
# normal output base, not into this one, which is deleted at the end.
mapfile -t second_files < <(outputs --output_base="$second" -- --disk_cache= --experimental_convenience_symlinks=ignore)

if ((${#first_files[@]} != ${#second_files[@]} || ${#first_files[@]} == 0)); then
  echo "repro: the two builds gave different sets of outputs" >&2
  exit 1
fi
status=0
for i in "${!first_files[@]}"; do
  a=$(sha256sum <"${first_files[$i]}" | cut -d' ' -f1)
  b=$(sha256sum <"${second_files[$i]}" | cut -d' ' -f1)
  name=${first_files[$i]##*/}
  if [[ $a == "$b" ]]; then
    echo "repro: identical  $a  $name"
  else
    echo "repro: DIFFERENT  $a != $b  $name"
    status=1
  fi
done
exit "$status"
