"""Public entry point of the appliance macros: load them from here.

- `preseeded_image`: a Go binary as a multi-platform image and its preseed
  bundle.
- `appliance_initramfs`: the appliance's initramfs: init, containerd, the
  kubelet, runc, CNI, mkfs.erofs, the preseed tree and the static pods.
- `appliance_with_bundles`: the preseed tree, static pods and E2E initramfs
  of a set of bundles, for tests.
"""

load(":appliance.bzl", _appliance_initramfs = "appliance_initramfs", _appliance_with_bundles = "appliance_with_bundles")
load(":preseeded_image.bzl", _preseeded_image = "preseeded_image")

appliance_initramfs = _appliance_initramfs
appliance_with_bundles = _appliance_with_bundles
preseeded_image = _preseeded_image
