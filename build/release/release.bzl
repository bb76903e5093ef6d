"""release_archive: the appliance's release, one deterministic tar."""

load("//build/appliance:defs.bzl", "SystemImageInfo")

def _release_archive_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    layouts = ctx.attr.disk[OutputGroupInfo].layout.to_list()
    if len(layouts) != 1:
        fail("disk %s must be a disk_image, with one layout file" % ctx.attr.disk.label)
    system_info = ctx.attr.system[SystemImageInfo].info
    args = ctx.actions.args()
    args.add("-uki", ctx.file.uki)
    args.add("-disk", ctx.file.disk)
    args.add("-disk_layout", layouts[0])
    args.add("-system_info", system_info)
    args.add("-init", ctx.file.init)
    args.add("-kernel_lock", ctx.file.kernel_lock)
    args.add("-preseed_manifest", ctx.file.preseed_manifest)
    args.add("-pods", ctx.file.pods)
    args.add("-default_version", ctx.attr.default_version)
    args.add("-out", out)
    inputs = [ctx.file.uki, ctx.file.disk, layouts[0], system_info, ctx.file.init, ctx.file.kernel_lock, ctx.file.preseed_manifest, ctx.file.pods]
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
    doc = """Packs `appliance-<version>/` into one tar: `disk.raw.zst` (the disk image,
zstd), `uki.efi` (the Unified Kernel Image it boots), `manifest.json`
(version, the Go version `init` was built with, kernel packages, the system
image's dm-verity root hash and the UKI's command line, the disk's partition
layout with GUIDs, offsets and sizes and the raw image's size and sha256,
every preseeded image with namespace, name, index and manifest digests,
size and sha256, the EROFS cache's blobs, every static pod with its path and
the digest reference each container runs, and the sha256 of every artifact)
and `SHA256SUMS` for `sha256sum -c`. Inputs that do not belong together (a
UKI booting another system than the disk's slot A holds) are refused. The
archive is byte-identical for equal inputs.""",
    attrs = {
        "default_version": attr.string(
            doc = "The version of unstamped builds.",
            default = "0.0.0-dev",
        ),
        "disk": attr.label(
            doc = "The disk image (a disk_image: its `.raw` and its `layout` output group).",
            mandatory = True,
            allow_single_file = [".raw"],
        ),
        "init": attr.label(
            doc = "The /init binary the system holds: the manifest's Go version is the one it was built with.",
            mandatory = True,
            allow_single_file = True,
        ),
        "kernel_lock": attr.label(
            doc = "The kernel's package lock (its package versions go into the manifest).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "pods": attr.label(
            doc = "The static pods listing of the system (a static_pods target's `pods_json` output group).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "preseed_manifest": attr.label(
            doc = "The preseed manifest of the system's bundles (preseed_tree's manifest).",
            mandatory = True,
            allow_single_file = [".json"],
        ),
        "stamp": attr.bool(
            doc = "Take the version from STABLE_APPLIANCE_VERSION of Bazel's workspace status (use a select on --stamp).",
            default = False,
        ),
        "system": attr.label(
            doc = "The system_image in the disk's slot A, which the UKI boots.",
            mandatory = True,
            providers = [SystemImageInfo],
        ),
        "uki": attr.label(
            doc = "The Unified Kernel Image on the disk's ESP.",
            mandatory = True,
            allow_single_file = [".efi"],
        ),
        "_mkrelease": attr.label(
            default = "//build/release/cmd/mkrelease",
            executable = True,
            cfg = "exec",
        ),
    },
)
