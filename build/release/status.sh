#!/usr/bin/env bash
# Bazel's workspace status command (see .bazelrc): the release version of a
# stamped build is `git describe` of the source tree, e.g. v1.2.0 or
# v1.2.0-3-gabc1234-dirty. It prints nothing outside a git checkout.
set -euo pipefail
if v=$(git describe --tags --always --dirty 2>/dev/null); then
  echo "STABLE_APPLIANCE_VERSION ${v#v}"
fi
