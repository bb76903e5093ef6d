"""Preseed bundle format constants, generated from core/bundleformat: do not edit.

Regenerate with `GOFLAGS=-mod=mod go run ./build/genbzl bundle_format > build/oci/bundle_format.bzl`.
"""

# Each compression kind of a bundle and its file name extension.
BUNDLE_EXTENSIONS = {
    "": ".tar",
    "gzip": ".tar.gz",
    "zstd": ".tar.zst",
}

# Where bundles live in the appliance: PRESEED_ROOT/<namespace>/<name><ext>.
PRESEED_ROOT = "/containerd/preseed"

# Where the appliance carries the preseed manifest.
PRESEED_MANIFEST_PATH = "/etc/appliance/preseed.json"
