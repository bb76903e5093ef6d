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

# The pins: "package=version" lines of toolroot.lock (comments dropped).
toolroot_pins() {
  sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$toolroot_lock"
}

# Fails, before anything is installed, when the archive's index lacks a
# version toolroot.lock pins: the archive moved on, and the root would not
# be the one the lock describes.
check_pins_in_archive() {
  local mirror=$1 index missing
  index=$(mktemp)
  if ! timeout 300 /usr/lib/apt/apt-helper -o Acquire::Retries=0 download-file \
    "$mirror/dists/$toolroot_suite/main/binary-amd64/Packages.gz" "$index" >/dev/null 2>&1; then
    rm -f "$index"
    die "could not fetch the package index of Debian $toolroot_suite from $mirror"
  fi
  missing=$(gzip -dc "$index" | awk -v pins="$(toolroot_pins)" '
    BEGIN { n = split(pins, l, "\n"); for (i = 1; i <= n; i++) { split(l[i], f, "="); want[f[1]] = f[2] } }
    /^Package: / { p = $2 }
    /^Version: / { if (p in want && want[p] == $2) found[p] = 1 }
    END { for (p in want) if (!(p in found)) print p "=" want[p] }' | LC_ALL=C sort)
  rm -f "$index"
  [[ -z $missing ]] ||
    die "the Debian archive at $mirror no longer has these versions pinned in build/offline/toolroot.lock ($(wc -l <<<"$missing") of them): $(head -n 12 <<<"$missing" | tr '\n' ' ')... Move the pins with: APPLIANCE_TOOLROOT_RELOCK=1 tools/bazel version"
}

# Writes toolroot.lock from what the root at $1 holds.
write_lock() {
  {
    echo "# Every package of the toolchain root, pinned: written by"
    echo "# APPLIANCE_TOOLROOT_RELOCK=1 tools/bazel version (build/offline/setup-toolroot.sh)."
    in_root "$1" / -- dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort
  } >"$toolroot_lock"
}

# Fails when the root at $1 holds other packages or versions than the lock.
check_root_pins() {
  local diff
  diff=$(LC_ALL=C diff <(toolroot_pins | LC_ALL=C sort) \
    <(in_root "$1" / -- dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort)) ||
    die "the toolchain root differs from build/offline/toolroot.lock ('<' pinned, '>' installed): $(tr '\n' ' ' <<<"$diff")"
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

  local relock=${APPLIANCE_TOOLROOT_RELOCK:-0}
  if [[ $relock != 1 ]]; then
    check_pins_in_archive "$mirror"
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

  # Pinned, every package is installed at its locked version; relocking,
  # the newest of the archive, and the lock is written from what came.
  local packages=(bazel-bootstrap "golang-$go_minor-go" "${toolroot_packages[@]}")
  if [[ $relock != 1 ]]; then
    mapfile -t packages < <(toolroot_pins)
  fi
  in_root "$partial" / -- /bin/sh -ec '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends --allow-downgrades "$@" >/dev/null
    apt-get clean
    # The host bundle may hold the CAs of the network this machine is on.
    cat /etc/ssl/certs/ca-certificates.crt.host >>/etc/ssl/certs/ca-certificates.crt
  ' apt "${packages[@]}" ||
    die "installing packages into the toolchain root failed (see the apt output above)"
  if [[ $relock == 1 ]]; then
    write_lock "$partial"
    log "wrote $toolroot_lock; commit it"
  else
    check_root_pins "$partial"
  fi

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

