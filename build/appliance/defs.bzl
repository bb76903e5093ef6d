"""Public entry point of the appliance macros: load them from here.

- `preseeded_image`: a Go binary as a multi-platform image and its preseed
  bundle.
- `appliance_root`: the appliance's root as a tar: init, containerd, the
  kubelet, runc, CNI, mkfs.erofs, the preseed tree and the static pods.
- `appliance_disk`: the appliance's disk image (GPT, ESP with a Unified
  Kernel Image, system slots) whose slot A holds a root as a system image.
- `appliance_with_bundles`: the preseed tree, static pods, E2E root and
  disk image of a set of bundles, for tests.
- `system_image`, `uki`, `disk_image`: the rules under appliance_disk.
"""

load(":appliance.bzl", _appliance_disk = "appliance_disk", _appliance_root = "appliance_root", _appliance_with_bundles = "appliance_with_bundles")
load(":disk.bzl", _SystemImageInfo = "SystemImageInfo", _disk_image = "disk_image", _system_image = "system_image", _uki = "uki")
load(":preseeded_image.bzl", _preseeded_image = "preseeded_image")

appliance_disk = _appliance_disk
appliance_root = _appliance_root
appliance_with_bundles = _appliance_with_bundles
preseeded_image = _preseeded_image
disk_image = _disk_image
system_image = _system_image
SystemImageInfo = _SystemImageInfo
uki = _uki
