"""Node settings, generated from core/node: do not edit.

Regenerate with `GOFLAGS=-mod=mod go run ./build/genbzl node > build/appliance/node.bzl`.
"""

# The kubelet's staticPodPath: where the appliance carries the static pods.
STATIC_POD_DIR = "/etc/kubernetes/manifests"

# /etc's links to the files the node writes at boot, on tmpfs (the root may be
# read-only): each path to its target.
ETC_LINKS = {
    "/etc/hosts": "/run/etc/hosts",
    "/etc/machine-id": "/run/etc/machine-id",
    "/etc/resolv.conf": "/run/etc/resolv.conf",
}
