#!/usr/bin/env bash
# Tests of the offline entry point's early errors: each runs tools/bazel in a
# situation that must fail fast, with a clear message, before anything is
# installed. Needs root (as tools/bazel does); takes a few seconds; touches
# neither the real toolchain root nor Bazel's caches (each case has its own
# APPLIANCE_CACHE).
set -euo pipefail

ws=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
scratch=$(mktemp -d /var/tmp/entrypoint-test.XXXXXX)
cleanup() {
  umount "$scratch/small" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
passed=0
failed=0

# expect NAME PATTERN COMMAND...: COMMAND must fail and print PATTERN.
expect() {
  local name=$1 pattern=$2 out status=0
  shift 2
  out=$("$@" 2>&1) || status=$?
  if ((status != 0)) && grep -qE -- "$pattern" <<<"$out"; then
    echo "PASS: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name (exit $status, want failure with /$pattern/), output:"
    sed 's/^/    /' <<<"$out"
    failed=$((failed + 1))
  fi
}

expect "refuses to run without root" "must run as root" \
  setpriv --reuid=65534 --regid=65534 --clear-groups "$ws/tools/bazel" version

mkdir -p "$scratch/small"
mount -t tmpfs -o size=64m tmpfs "$scratch/small"
expect "refuses a cache without enough free disk" "has 0 GiB free, needs at least [0-9]+ GiB" \
  env APPLIANCE_CACHE="$scratch/small/cache" "$ws/tools/bazel" version

expect "reports an unreachable Debian archive" "Debian archive unreachable: could not fetch http://127.0.0.1:9/debian/dists/" \
  env APPLIANCE_CACHE="$scratch/nomirror" APPLIANCE_DEBIAN_MIRROR=http://127.0.0.1:9/debian "$ws/tools/bazel" version

expect "reports an unreachable Go module proxy" "Go module proxy unreachable: could not fetch http://127.0.0.1:9/github.com/bazelbuild/rules_go/" \
  env APPLIANCE_CACHE="$scratch/noproxy" GOPROXY=http://127.0.0.1:9 "$ws/tools/bazel" version

# An archive that no longer has a pinned version (here: a file:// archive
# whose index holds one package) fails before anything is installed, naming
# the pins it lacks.
mirror="$scratch/mirror"
mkdir -p "$mirror/dists/sid/main/binary-amd64"
echo "Suite: unstable" >"$mirror/dists/sid/Release"
printf 'Package: hello\nVersion: 1.0-1\nArchitecture: amd64\n\n' | gzip -n >"$mirror/dists/sid/main/binary-amd64/Packages.gz"
expect "refuses an archive without the pinned versions" "no longer has these versions pinned in build/offline/toolroot.lock \([0-9]+ of them\): [a-z0-9.+-]+=" \
  env APPLIANCE_CACHE="$scratch/unpinned" APPLIANCE_DEBIAN_MIRROR="file://$mirror" "$ws/tools/bazel" version
if [[ -e $scratch/unpinned/toolroot.partial ]]; then
  echo "FAIL: the refused setup left toolroot.partial"
  failed=$((failed + 1))
fi

# An interrupted setup leaves toolroot.partial (never toolroot): it is found,
# reported and removed before the setup starts again.
mkdir -p "$scratch/interrupted/toolroot.partial/usr"
expect "redoes an interrupted setup" "an earlier setup was interrupted; redoing it" \
  env APPLIANCE_CACHE="$scratch/interrupted" APPLIANCE_DEBIAN_MIRROR=http://127.0.0.1:9/debian "$ws/tools/bazel" version
if [[ -e $scratch/interrupted/toolroot.partial ]]; then
  echo "FAIL: the interrupted setup's toolroot.partial was left in place"
  failed=$((failed + 1))
else
  echo "PASS: the interrupted setup's toolroot.partial was removed"
  passed=$((passed + 1))
fi

# A root without its identity marker is half-made or stale: set up again.
mkdir -p "$scratch/halfmade/toolroot/usr/bin"
expect "never uses a root without its identity marker" "setting up the toolchain root" \
  env APPLIANCE_CACHE="$scratch/halfmade" APPLIANCE_DEBIAN_MIRROR=http://127.0.0.1:9/debian "$ws/tools/bazel" version

echo "entrypoint: $passed passed, $failed failed"
((failed == 0))
