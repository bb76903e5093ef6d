"""release_archive: the appliance's release, one deterministic tar."""

def _release_archive_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    args = ctx.actions.args()
    args.add("-kernel", ctx.file.kernel)
    args.add("-initramfs", ctx.file.initramfs)
    args.add("-init", ctx.file.init)
    args.add("-kernel_lock", ctx.file.kernel_lock)
    args.add("-preseed_manifest", ctx.file.preseed_manifest)
    args.add("-pods", ctx.file.pods)
    args.add("-default_version", ctx.attr.default_version)
    args.add("-out", out)
    inputs = [ctx.file.kernel, ctx.file.initramfs, ctx.file.init, ctx.file.kernel_lock, ctx.file.preseed_manifest, ctx.file.pods]
    if ctx.attr.stamp:
        args.add("-stable_status", ctx.info_file)
        inputs.append(ctx.info_file)
    ctx.actions.run(
        executable = ctx.executable._mkrelease,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        mnemonic = "ReleaseArchive",
        progress_message = "Packing release %{output}",
    )
    return [DefaultInfo(files = depset([out]))]

release_archive = rule(
    implementation = _release_archive_impl,
    doc = """Packs `appliance-<version>/` into one tar: `vmlinuz`, the initramfs,
`manifest.json` (version, the Go version `init` was built with, kernel packages, every preseeded image
with namespace, name, index and manifest digests, size and sha256, every
static pod with its path and the digest reference each container runs, and the
sha256 of every artifact) and `SHA256SUMS` for `sha256sum -c`. The archive is
byte-identical for equal inputs.""",
    attrs = {
        "default_version": attr.string(
            doc = "The version of unstamped builds.",
            default = "0.0.0-dev",
        ),
        "init": attr.label(
            doc = "The /init binary the initramfs holds: the manifest's Go version is the one it was built with.",
            mandatory = True,
            allow_single_file = True,
        ),
        "initramfs": attr.label(doc = "The production initramfs.", mandatory = True, allow_single_file = True),
        "kernel": attr.label(doc = "The kernel image.", mandatory = True, allow_single_file = True),
        "kernel_lock": attr.label(
            doc = "The kernel's package lock (its package versions go into the manifest).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "pods": attr.label(
            doc = "The static pods listing of the initramfs (a static_pods target's `pods_json` output group).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "preseed_manifest": attr.label(
            doc = "The preseed manifest of the image's bundles (preseed_tree's manifest).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "stamp": attr.bool(
            doc = "Take the version from STABLE_APPLIANCE_VERSION of Bazel's workspace status (use a select on --stamp).",
            default = False,
        ),
        "_mkrelease": attr.label(
            default = "//build/release/cmd/mkrelease",
            executable = True,
            cfg = "exec",
        ),
    },
)
