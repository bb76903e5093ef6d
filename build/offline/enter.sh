#!/usr/bin/env bash
# Runs a command inside the toolchain root. Must be started inside a private
# mount namespace (a throwaway `unshare --mount`, or the persistent one that
# bazel.sh keeps for Bazel): every mount made here lives in that namespace
# only, so nothing is ever mounted inside the root on the host and the root can
# be deleted safely. Mounts are made only where missing, so entering the same
# namespace again is cheap.
#
# Usage: enter.sh ROOT WORKDIR [BIND_DIR...] -- COMMAND [ARG...]
# Each BIND_DIR is mounted at the same path inside the root as outside, so
# paths that Bazel prints or symlinks (bazel-bin, ...) work from the host too.
set -euo pipefail

root=$1
workdir=$2
shift 2
binds=()
while (($#)) && [[ $1 != -- ]]; do
  binds+=("$1")
  shift
done
[[ ${1:-} == -- ]] || { echo "enter.sh: missing -- before the command" >&2; exit 2; }
shift

if ! mountpoint -q "$root/proc"; then
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
  # Name resolution of the host (the Go module proxy is reached by name).
  touch "$root/etc/resolv.conf"
  mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
fi
for dir in "${binds[@]}"; do
  if mountpoint -q "$root$dir"; then
    # Still the same directory: done. Else it was removed and made again
    # (a new clone at the path of an old one), and the mount still shows
    # the removed one, where getcwd fails: replace it.
    [[ $(stat -c %d:%i "$dir") != "$(stat -c %d:%i "$root$dir")" ]] || continue
    umount -l "$root$dir"
  fi
  mkdir -p "$root$dir"
  mount --bind "$dir" "$root$dir"
done

# A clean environment: only what the tools inside need, plus the proxy and Go
# settings of the caller, so the root behaves the same on every machine.
env_vars=(
  "PATH=$TOOLROOT_PATH"
  "HOME=/root"
  "LANG=C.UTF-8"
  "TERM=${TERM:-dumb}"
)
for name in GOPROXY GONOSUMDB GONOSUMCHECK GOSUMDB GOPRIVATE GOINSECURE \
  http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY CI DOCKER_CONFIG; do
  if [[ -n ${!name:-} ]]; then
    env_vars+=("$name=${!name}")
  fi
done

exec chroot "$root" /usr/bin/env -i "${env_vars[@]}" \
  /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@"
