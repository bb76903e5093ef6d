"""appliance_initramfs: the appliance's initramfs with a given init."""

load("//build/oci:bundle_format.bzl", "PRESEED_MANIFEST_PATH")
load("//build/oci:defs.bzl", "preseed_tree")
load("//build/rules:initramfs.bzl", "initramfs")

def appliance_initramfs(
        name,
        init,
        preseed_tar = Label("//images:preseed_tar"),
        preseed_manifest = Label("//images:preseed_json"),
        **kwargs):
    """The appliance image's initramfs: init, containerd, runc, CNI, kernel modules and the preseeded bundles with their manifest.

    Args:
      name: the target's name.
      init: the init binary (`//core/init` or its E2E variant).
      preseed_tar: the tree of bundles (a preseed_tree's tar); tests swap it.
      preseed_manifest: that tree's manifest, which preseed enforces.
      **kwargs: passed to initramfs (visibility, tags, ...).
    """
    initramfs(
        name = name,
        dirs = ["/etc", "/proc", "/run", "/sys", "/tmp", "/var"],
        executables = {
            Label("//third_party/cni:bridge"): "/opt/cni/bin/bridge",
            Label("//third_party/cni:host-local"): "/opt/cni/bin/host-local",
            Label("//third_party/cni:loopback"): "/opt/cni/bin/loopback",
            Label("//third_party/containerd:containerd"): "/usr/bin/containerd",
            Label("//third_party/containerd:containerd-shim-runc-v2"): "/usr/bin/containerd-shim-runc-v2",
            Label("//third_party/runc:runc"): "/usr/bin/runc",
            init: "/init",
        },
        files = {
            Label("//images/appliance:10-pods.conflist"): "/etc/cni/net.d/10-pods.conflist",
            # The manifest of the preseeded bundles, which preseed enforces
            # (core/init sets preseed.Config.Manifest to this path).
            preseed_manifest: PRESEED_MANIFEST_PATH,
        },
        tars = [
            # /containerd/preseed/<namespace>/<name>.tar: the preseeded images.
            preseed_tar,
            # /lib/modules/<release>/ and /etc/modules-load.d/.
            Label("//third_party/linux:modules"),
        ],
        **kwargs
    )

def appliance_with_bundles(name, init, bundles, testonly = False, **kwargs):
    """An appliance initramfs with its own set of preseed bundles.

    Declares `<name>_tree` (a preseed_tree of `bundles`), `<name>_tree_tar`
    and `<name>_tree_json` (its tar and manifest) and the initramfs `<name>`
    that carries them. Variants of the appliance (E2E trees with extra
    images) use it instead of repeating those four targets.

    Args:
      name: the initramfs target's name.
      init: the init binary (`//core/init` or its E2E variant).
      bundles: preseed_bundle targets.
      testonly: whether the targets are testonly (needed when a bundle is).
      **kwargs: passed to the initramfs (visibility, tags, ...).
    """
    preseed_tree(
        name = name + "_tree",
        bundles = bundles,
        testonly = testonly,
    )
    native.filegroup(
        name = name + "_tree_tar",
        srcs = [":" + name + "_tree"],
        output_group = "tar",
        testonly = testonly,
    )
    native.filegroup(
        name = name + "_tree_json",
        srcs = [":" + name + "_tree"],
        output_group = "manifest",
        testonly = testonly,
    )
    appliance_initramfs(
        name = name,
        init = init,
        preseed_manifest = ":" + name + "_tree_json",
        preseed_tar = ":" + name + "_tree_tar",
        testonly = testonly,
        **kwargs
    )
