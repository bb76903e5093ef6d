# Sourced by bazel.sh: builds the toolchain root. Everything in this file is
# part of the root's identity: changing it makes bazel.sh build a new root.
# It builds into $partial and renames it to $root only when complete, so an
# interrupted setup is never used half-made.

# Stops Bazel servers running from the old root and drops the mount namespace
# that holds its mounts, before the root is replaced.
leave_old_root() {
  local base
  for base in "$output_user_root"/*/; do
    stop_bazel_server "${base%/}"
  done
  umount "$ns_file" 2>/dev/null || true
}

setup_root() {
  local mirror proxy
  check_free_disk "$toolroot_setup_min_free_gib"
  mirror=$(debian_mirror)
  proxy=$(go_proxy)

  if [[ -e $partial ]]; then
    log "found $partial: an earlier setup was interrupted; redoing it"
    rm -rf --one-file-system "$partial"
  fi
  log "setting up the toolchain root at $root (Debian $toolroot_suite, Bazel $bazel_version, Go $go_minor, rules_go $rules_go_version, gazelle $gazelle_version)"
  local start=$SECONDS
  # Both registries are probed before anything is installed, for a clear,
  # early error. apt-helper is on every Debian, so it works on a bare host.
  probe_url "Debian archive" "$mirror/dists/$toolroot_suite/Release"
  if [[ -n $proxy ]]; then
    probe_url "Go module proxy" "$proxy/github.com/bazelbuild/rules_go/@v/v$rules_go_version.info"
  fi

  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on the host"
    apt-get update -qq || die "apt-get update failed on the host"
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null || die "could not install debootstrap on the host"
  fi

  debootstrap --variant=minbase "$toolroot_suite" "$partial" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    die "debootstrap of Debian $toolroot_suite failed; see $cache/debootstrap.log"

  # The archive may be a frozen copy whose Release files have expired.
  echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/90appliance-frozen-archive"
  mkdir -p "$partial/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$partial/etc/ssl/certs/ca-certificates.crt.host"

  in_root "$partial" / -- /bin/sh -ec '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    apt-get clean
    # The host bundle may hold the CAs of the network this machine is on.
    cat /etc/ssl/certs/ca-certificates.crt.host >>/etc/ssl/certs/ca-certificates.crt
  ' apt bazel-bootstrap "golang-$go_minor-go" "${toolroot_packages[@]}" ||
    die "installing packages into the toolchain root failed (see the apt output above)"

  if [[ -z $proxy ]]; then
    # Neither GOPROXY nor a Go on the host: ask the root's Go for its default.
    proxy=$(in_root "$partial" / -- go env GOPROXY)
    proxy=${proxy%%[,|]*}
    probe_url "Go module proxy" "${proxy%/}/github.com/bazelbuild/rules_go/@v/v$rules_go_version.info"
  fi

  local have
  have=$(in_root "$partial" / -- bazel --version 2>/dev/null | awk '{ print $2 }')
  [[ $have == "$bazel_version" ]] ||
    die "Debian $toolroot_suite ships Bazel '$have', but .bazelversion pins '$bazel_version'"

  # rules_go and gazelle are Go modules: materialise them from the module proxy,
  # restore the executable bits and vendor/ that module zips drop.
  in_root "$partial" / -- /bin/sh -ec '
    modules_dir=$1 rules_go=$2 gazelle=$3
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local
    mkdir -p "$modules_dir"
    dir=$(go mod download -json "github.com/bazelbuild/rules_go@v$rules_go" | sed -n "s/^\t\"Dir\": \"\(.*\)\",$/\1/p")
    cp -r "$dir" "$modules_dir/rules_go"
    dir=$(go mod download -json "github.com/bazelbuild/bazel-gazelle@v$gazelle" | sed -n "s/^\t\"Dir\": \"\(.*\)\",$/\1/p")
    cp -r "$dir" "$modules_dir/gazelle"
    chmod -R u+w "$modules_dir"
    find "$modules_dir" -name "*.sh" -exec chmod +x {} +
    cd "$modules_dir/gazelle" && go mod vendor -e
    go clean -modcache
  ' sh "$modules_dir" "$rules_go_version" "$gazelle_version" ||
    die "materialising rules_go v$rules_go_version and gazelle v$gazelle_version failed"

  echo "$identity" >"$partial/.toolroot-identity"
  leave_old_root
  rm -rf --one-file-system "$root"
  mv "$partial" "$root"
  log "toolchain root ready in $((SECONDS - start)) s ($(du -sh "$root" | cut -f1))"
}

