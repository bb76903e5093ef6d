#!/usr/bin/env bash
# Runs the pinned buildifier (build/lint/package.json) over every Starlark
# file of the project: checks formatting and lint by default, fixes both with
# --fix. Installs the pin from the npm registry on first use.
set -euo pipefail

lint=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ws=$(cd "$lint/../.." && pwd)
buildifier="$lint/node_modules/.bin/buildifier"

if [[ ! -x $buildifier ]]; then
  command -v npm >/dev/null || { echo "buildifier.sh: error: npm is not installed (apt-get install npm)" >&2; exit 1; }
  npm ci --prefix "$lint" --no-audit --no-fund --loglevel=error >&2
fi

mode=(-mode=check -lint=warn)
if [[ ${1:-} == --fix ]]; then
  mode=(-mode=fix -lint=fix)
fi

cd "$ws"
mapfile -t files < <(git ls-files --cached --others --exclude-standard \
  '*.bzl' '*.bazel' '**/BUILD' 'BUILD' 'WORKSPACE' | sort -u | while read -r f; do [[ -f $f ]] && echo "$f"; done)
"$buildifier" "${mode[@]}" "${files[@]}"
echo "buildifier: ${#files[@]} files clean"
