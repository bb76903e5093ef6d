#!/usr/bin/env bash
# Offline Bazel: sets up the toolchain root once (a Debian root with Bazel, the
# Go SDK, gcc, QEMU, ...; see toolroot.conf), reuses it afterwards, and runs
# Bazel inside it with the workspace and Bazel's output root mounted at the same
# paths inside and outside. Called by tools/bazel; arguments go to Bazel.
#
# The only inputs from outside are Debian's archive (the mirror the host's apt
# uses) and the Go module proxy (the caller's GOPROXY, else Go's default).
#
# Environment:
#   APPLIANCE_CACHE          where the root and Bazel's output root live
#                            (default /var/cache/appliance-build)
#   APPLIANCE_DEBIAN_MIRROR  Debian mirror URL (default: the host apt's)
#   APPLIANCE_TOOLROOT_RELOCK=1  set the root up from the archive's newest
#                            packages and rewrite toolroot.lock from it
set -euo pipefail

ws=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
offline="$ws/build/offline"
# shellcheck source=toolroot.conf
source "$offline/toolroot.conf"
# Every package of the root, pinned to its version (setup-toolroot.sh).
toolroot_lock="$offline/toolroot.lock"

cache=${APPLIANCE_CACHE:-/var/cache/appliance-build}
root="$cache/toolroot"
partial="$cache/toolroot.partial"
output_user_root="$cache/bazel"
# The persistent mount namespace in which Bazel runs (see run_bazel).
ns_dir="$cache/mntns"
ns_file="$ns_dir/mnt"
# Inside the root: where the materialised rule sets live (see offline.bazelrc).
modules_dir=/opt/bazel-modules

die() {
  echo "tools/bazel: error: $*" >&2
  exit 1
}
log() { echo "tools/bazel: $*" >&2; }

module_dep_version() {
  local v
  v=$(sed -n "s/^bazel_dep(name = \"$1\", version = \"\([^\"]*\)\".*/\1/p" "$ws/MODULE.bazel")
  [[ -n $v ]] || die "$ws/MODULE.bazel: no bazel_dep(name = \"$1\", version = ...) line"
  echo "$v"
}

free_gib() { df -Pk "$1" | awk 'NR==2 { print int($4 / 1048576) }'; }

check_free_disk() {
  local need=$1 have
  have=$(free_gib "$cache")
  ((have >= need)) || die "$cache has ${have} GiB free, needs at least ${need} GiB (set APPLIANCE_CACHE to a larger disk)"
}

# The Debian mirror the host's apt uses: the first non-security "URIs:" of a
# deb822 source, else the first "deb" line of sources.list.
debian_mirror() {
  if [[ -n ${APPLIANCE_DEBIAN_MIRROR:-} ]]; then
    echo "$APPLIANCE_DEBIAN_MIRROR"
    return
  fi
  local m
  m=$(awk '
    /^URIs:/ { uri = $2 }
    /^Suites:/ && uri != "" && $0 !~ /-security/ { print uri; exit }
    /^$/ { uri = "" }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $3 !~ /-security/ { print $2; exit }' /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror in /etc/apt/sources.list{,.d}; set APPLIANCE_DEBIAN_MIRROR"
  echo "${m%/}"
}

# The Go module proxy: the first of GOPROXY, else the one the host's Go
# uses; empty when neither says (then Go's default, learnt from the root's Go
# once it is installed).
go_proxy() {
  local p=${GOPROXY:-}
  if [[ -z $p ]] && command -v go >/dev/null; then
    p=$(go env GOPROXY 2>/dev/null || true)
  fi
  p=${p%%[,|]*}
  [[ $p != direct && $p != off ]] || p=""
  echo "${p%/}"
}

# Fails with a clear message when URL cannot be fetched. apt-helper is on
# every Debian, so this works on a bare host before anything is installed.
probe_url() {
  local what=$1 url=$2 out
  out=$(mktemp)
  if ! timeout 60 /usr/lib/apt/apt-helper -o Acquire::Retries=0 download-file "$url" "$out" >/dev/null 2>&1; then
    rm -f "$out"
    die "$what unreachable: could not fetch $url"
  fi
  rm -f "$out"
}

in_root() {
  local dir=$1 workdir=$2
  shift 2
  TOOLROOT_PATH=$toolroot_path unshare --mount --propagation private "$offline/enter.sh" "$dir" "$workdir" "$@"
}

# Stops the Bazel server of an output base, if one runs, and waits for it.
stop_bazel_server() {
  local pidfile=$1/server/server.pid.txt pid
  [[ -f $pidfile ]] || return 0
  pid=$(<"$pidfile")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

# Each fresh clone gets its own output base (Bazel keys them by workspace
# path); remove those whose workspace is gone, or CI clones fill the disk.
remove_vanished_output_bases() {
  local marker base workspace
  for marker in "$output_user_root"/*/DO_NOT_BUILD_HERE; do
    [[ -f $marker ]] || continue
    base=${marker%/DO_NOT_BUILD_HERE}
    workspace=$(<"$marker")
    [[ -n $workspace && ! -d $workspace ]] || continue
    stop_bazel_server "$base"
    log "removing the output base of vanished workspace $workspace ($(du -sh "$base" | cut -f1))"
    rm -rf --one-file-system "$base" 2>/dev/null || true
  done
}

# shellcheck source=setup-toolroot.sh
source "$offline/setup-toolroot.sh"

[[ $(id -u) == 0 ]] || die "must run as root: it builds the toolchain root and enters it with chroot (try: sudo $0 ...)"

bazel_version=$(tr -d '[:space:]' <"$ws/.bazelversion")
go_minor=$(awk '$1 == "go" { split($2, v, "."); print v[1] "." v[2]; exit }' "$ws/go.mod")
[[ -n $go_minor ]] || die "$ws/go.mod: no go directive"
toolroot_path="/usr/lib/go-$go_minor/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
rules_go_version=$(module_dep_version rules_go)
gazelle_version=$(module_dep_version gazelle)
# What the root is made from; any change makes a new root.
identity=$(
  {
    echo "$bazel_version $go_minor $rules_go_version $gazelle_version"
    cat "$offline/toolroot.conf" "$offline/toolroot.lock" "$offline/setup-toolroot.sh"
  } | sha256sum | cut -d' ' -f1
)

mkdir -p "$cache" "$output_user_root"
# One setup at a time; runs wait until the root is ready.
exec 9>"$cache/setup.lock"
flock 9
if [[ ! -f $root/.toolroot-identity || $(cat "$root/.toolroot-identity") != "$identity" ]]; then
  setup_root
fi
remove_vanished_output_bases
exec 9>&-
check_free_disk "$toolroot_run_min_free_gib"

# Flags that depend on this machine, generated so that offline.bazelrc stays
# the same everywhere. The disk cache lets a fresh clone reuse earlier builds.
host_rc="$output_user_root/host.bazelrc"
host_rc_content="# Generated by build/offline/bazel.sh for this machine.
common --repo_env=GOROOT=/usr/lib/go-$go_minor
common --repo_env=APPLIANCE_DEBIAN_MIRROR=$(debian_mirror)
build --disk_cache=$output_user_root/disk-cache
build --experimental_disk_cache_gc_max_size=$((toolroot_disk_cache_max_gib))G"
if [[ ! -f $host_rc || $(<"$host_rc") != "$host_rc_content" ]]; then
  echo "$host_rc_content" >"$host_rc"
fi

# Bazel's client checks that the server's working directory is the workspace
# by reading /proc/PID/cwd, which only matches when client and server share a
# mount namespace. So Bazel runs in one namespace that outlives each call,
# kept by a bind mount of its nsfs file on a private mount under the cache.
if ! nsenter --mount="$ns_file" true 2>/dev/null; then
  mkdir -p "$ns_dir"
  if ! mountpoint -q "$ns_dir"; then
    mount --bind "$ns_dir" "$ns_dir"
    mount --make-private "$ns_dir"
  fi
  touch "$ns_file"
  unshare --mount="$ns_file" --propagation private true
fi

workdir=$PWD
[[ $workdir == "$ws" || $workdir == "$ws"/* ]] || workdir=$ws
binds=("$ws" "$output_user_root")
# The caller's Docker config directory, at the same path: registry
# credentials named with --@appliance//build/oci/pull:docker_config, and the
# default keychain of `bazel run //images:update_lock`, are read inside.
docker_config=${DOCKER_CONFIG:-${HOME:-/root}/.docker}
if [[ -d $docker_config ]]; then
  binds+=("$docker_config")
  export DOCKER_CONFIG=$docker_config
fi
TOOLROOT_PATH=$toolroot_path exec nsenter --mount="$ns_file" \
  "$offline/enter.sh" "$root" "$workdir" "${binds[@]}" -- \
  bazel \
  --output_user_root="$output_user_root" \
  --bazelrc="$offline/offline.bazelrc" \
  --bazelrc="$host_rc" \
  "$@"
