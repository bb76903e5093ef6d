#!/usr/bin/env bash
# Reproducibility check: builds the release archive and its inputs (the
# preseed tree: slim bundles and the EROFS layer cache with its
# dm-verity trees, the system image, the Unified Kernel Image with its early
# initramfs, the disk image, and the update payload's manifest, which pins
# its files by sha256) in the normal output base
# and again in a fresh output base with no disk cache, so every action of
# this module and every Go link runs again (compiled Go packages of other
# repositories excepted: see below), and compares the outputs byte for
# byte. Prints the sha256 of each output; fails on any difference.
set -euo pipefail

ws=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ws"
targets=(
  //images:preseed.tar
  //images/appliance:disk_system
  //images/appliance:disk_uki
  //images/appliance:disk
  //images/release
  //images/release:update_manifest
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
# The second output base first takes, from the disk cache, the compiled Go
# packages of other repositories (Go modules, the kubelet's among them) and
# the Go standard library, and nothing else (third_party_go.bzl). Why: they
# are the Go compiler's output for sources pinned by go.sum, built by
# rules_go with -trimpath and no stamp, and recompiling them is about 20 of
# a cold CI's minutes on 2 cores. What this check is for, a non-determinism
# in this module's own rules and tools, is all in what the second build does
# run again: every action of this module, every Go link, every image, EROFS
# and initramfs action.
tools/bazel --output_base="$second" build --experimental_convenience_symlinks=ignore \
  --aspects=//build/repro:third_party_go.bzl%third_party_go --output_groups=third_party_go "${targets[@]}" >&2
# No disk cache: every other action runs again. It leaves the workspace's
# bazel-bin and bazel-out alone: they keep pointing into the normal output
# base, not into this one, which is deleted at the end.
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
