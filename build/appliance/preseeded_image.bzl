"""preseeded_image: a Go program as a one-layer image and its preseed bundles."""

load("//build/oci:defs.bzl", "go_layer", "oci_image", "oci_image_index", "preseed_bundle")

# Who uses the images and bundles: the appliance, the import tests and the E2E.
_USERS = [
    "//build/oci/tests/containerd:__pkg__",
    "//build/pods:__pkg__",
    "//core/preseed:__pkg__",
    "//images:__subpackages__",
    "//tests/e2e:__subpackages__",
]

# The image architecture of each Go architecture an index may be built for
# (the cpu constraint of the platform that oci_image_index sets).
_ARCHITECTURE = select({
    "@rules_go//go/platform:amd64": "amd64",
    "@rules_go//go/platform:arm64": "arm64",
})

def preseeded_image(name, binary, path, reference, bundle_name, namespace = "k8s.io", user = "65534:65534", platforms = None, bundle_platforms = None):
    """Declares the image targets of one preseeded Go program in its package.

    Targets: `<name>` (OCI layout, entrypoint `path`), `<name>_layer` (the
    binary at `path`), `bundle` (for `namespace`, named `reference`) and
    `bundle_zstd`; and `<name>_again` / `bundle_again`, the same built again
    in separate actions (its layer `<name>_layer_again` too), which
    //images:images_test compares for
    reproducibility. With `platforms`, `<name>` is an oci_image_index of
    `<name>_platform` built for each platform (the binary must be pure Go).
    With `bundle_platforms`, the bundles hold only those platforms of the
    index (its digest unchanged), and `bundle_all` holds every platform.

    Args:
      name: the image target's name.
      binary: the static go_binary.
      path: where the binary lies in the image; the entrypoint.
      reference: the fully normalised image name in the bundle.
      bundle_name: the bundle's file name (without .tar).
      namespace: the containerd namespace the bundle is for.
      user: the image's user.
      platforms: rules_go platforms (e.g. `@rules_go//go/toolchain:linux_arm64`)
        to build a multi-platform index for; none: a linux/amd64 image.
      bundle_platforms: os/arch of the index to keep in the bundles (e.g.
        the appliance's own, `["linux/amd64"]`); none: all.
    """
    for suffix, visibility in [("", _USERS), ("_again", ["//images:__pkg__"])]:
        # The layer too is built twice, in actions of its own: a layer
        # action that is not reproducible shows as two digests.
        go_layer(
            name = name + "_layer" + suffix,
            binary = binary,
            path = path,
        )
        if platforms:
            oci_image(
                name = name + "_platform" + suffix,
                architecture = _ARCHITECTURE,
                entrypoint = [path],
                os = "linux",
                tars = [":" + name + "_layer" + suffix],
                user = user,
                visibility = ["//visibility:private"],
            )
            oci_image_index(
                name = name + suffix,
                images = [":" + name + "_platform" + suffix],
                platforms = platforms,
                visibility = visibility,
            )
        else:
            oci_image(
                name = name + suffix,
                architecture = "amd64",
                entrypoint = [path],
                os = "linux",
                tars = [":" + name + "_layer" + suffix],
                user = user,
                visibility = visibility,
            )
        preseed_bundle(
            name = "bundle" + suffix,
            bundle_name = bundle_name,
            image = ":" + name + suffix,
            namespace = namespace,
            platforms = bundle_platforms,
            reference = reference,
            visibility = visibility,
        )
    preseed_bundle(
        name = "bundle_zstd",
        bundle_name = bundle_name,
        compression = "zstd",
        image = ":" + name,
        namespace = namespace,
        platforms = bundle_platforms,
        reference = reference,
        visibility = _USERS,
    )
    if bundle_platforms:
        preseed_bundle(
            name = "bundle_all",
            bundle_name = bundle_name,
            image = ":" + name,
            namespace = namespace,
            reference = reference,
            visibility = _USERS,
        )
