"""oci_image_index: a multi-platform image from single-platform images.

Name and attributes follow rules_oci's oci_image_index. defs.bzl re-exports
it; this file loads nothing from defs.bzl, so that it can.
"""

_TOOL = Label("//build/oci/cmd/imagetool")

_PLATFORMS = "//command_line_option:platforms"

def _multiplatform_transition_impl(settings, attr):
    # Without platforms, the images are built as they are (one
    # configuration); with them, each image once per platform.
    if not attr.platforms:
        return {_PLATFORMS: settings[_PLATFORMS]}
    return {
        str(p): {_PLATFORMS: str(p)}
        for p in attr.platforms
    }

_multiplatform_transition = transition(
    implementation = _multiplatform_transition_impl,
    inputs = [_PLATFORMS],
    outputs = [_PLATFORMS],
)

def _layout_dir(target, what):
    files = target[DefaultInfo].files.to_list()
    if len(files) != 1 or not files[0].is_directory:
        fail("%s %s must provide exactly one OCI layout directory" % (what, target.label))
    return files[0]

def _oci_image_index_impl(ctx):
    if ctx.attr.platforms:
        images = []
        for p in ctx.attr.platforms:
            images.extend(ctx.split_attr.images[str(p.label)])
    else:
        images = ctx.attr.images
    dirs = [_layout_dir(t, "image") for t in images]
    out = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    args = ctx.actions.args()
    args.add("index")
    args.add("--target", str(ctx.label))
    args.add("--out", out.path)
    args.add("--digest", digest.path)
    for d in dirs:
        args.add("--image", d.path)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = dirs,
        outputs = [out, digest],
        mnemonic = "OciImageIndex",
        progress_message = "Building image index %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        OutputGroupInfo(digest = depset([digest])),
    ]

oci_image_index = rule(
    implementation = _oci_image_index_impl,
    doc = """Builds a multi-platform image, as rules_oci's oci_image_index does:
an OCI image-layout directory (a tree artifact named like the target) whose
index.json names one image index. The index lists each image's manifest with
the platform its config names (os, architecture, variant), in the order of
`images` (with `platforms`: for each platform in order, each image). The
same images always give the same bytes. The index digest is also written to
`<name>.digest` (output group `digest`). Two images of one platform, or an
image that is not a layout of exactly one image manifest, fail the build.""",
    attrs = {
        "images": attr.label_list(
            doc = "oci_image targets (OCI layouts of one image manifest each).",
            mandatory = True,
            allow_files = True,
            cfg = _multiplatform_transition,
        ),
        "platforms": attr.label_list(
            doc = "Platforms to build each of `images` for, e.g. `@rules_go//go/toolchain:linux_arm64`; empty builds them once, as they are. Each image's oci_image must then set its architecture for the platform (a select()).",
        ),
        "_allowlist_function_transition": attr.label(
            default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
        ),
        "_tool": attr.label(
            default = _TOOL,
            executable = True,
            cfg = "exec",
            doc = "The imagetool binary.",
        ),
    },
)
