"""Node settings, generated from core/node: do not edit.

Regenerate with `GOFLAGS=-mod=mod go run ./build/genbzl node > build/appliance/node.bzl`.
"""

# The kubelet's staticPodPath: where the appliance carries the static pods.
STATIC_POD_DIR = "/etc/kubernetes/manifests"
