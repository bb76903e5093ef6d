"""initramfs: a deterministic, compressed newc cpio archive for the kernel."""

_SUFFIX = {"gzip": ".cpio.gz", "none": ".cpio", "zstd": ".cpio.zst"}

def _single_file(target, what):
    files = target[DefaultInfo].files.to_list()
    if len(files) != 1:
        fail("{} {} must be exactly one file, has {}".format(what, target.label, len(files)))
    return files[0]

def _initramfs_impl(ctx):
    entries = []
    inputs = []
    for target, path in ctx.attr.files.items():
        f = _single_file(target, "files entry")
        entries.append({"mode": 420, "path": path, "src": f.path})
        inputs.append(f)
    for target, path in ctx.attr.executables.items():
        f = _single_file(target, "executables entry")
        entries.append({"mode": 493, "path": path, "src": f.path})
        inputs.append(f)
    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec, json.encode({
        "devices": [
            # The kernel opens /dev/console for init before anything mounts /dev.
            {"major": 5, "minor": 1, "mode": 384, "path": "/dev/console", "type": "c"},
        ],
        "dirs": ctx.attr.dirs,
        "files": sorted(entries, key = lambda e: e["path"]),
        "symlinks": ctx.attr.symlinks,
        "tars": [f.path for f in ctx.files.tars],
    }))
    if ctx.attr.format == "tar":
        if ctx.attr.compression != "none":
            fail("initramfs %s: a tar is written uncompressed (compression = \"none\")" % ctx.label)
        out = ctx.actions.declare_file(ctx.label.name + ".tar")
    else:
        out = ctx.actions.declare_file(ctx.label.name + _SUFFIX[ctx.attr.compression])
    ctx.actions.run(
        executable = ctx.executable._mkinitramfs,
        arguments = ["-spec", spec.path, "-out", out.path, "-compression", ctx.attr.compression, "-format", ctx.attr.format],
        inputs = inputs + ctx.files.tars + [spec],
        outputs = [out],
        mnemonic = "Initramfs",
        progress_message = "Writing initramfs %{output}",
    )
    return [DefaultInfo(files = depset([out]))]

initramfs = rule(
    implementation = _initramfs_impl,
    doc = """Writes an initramfs: a newc cpio archive with uid/gid 0, mtime 0
and sorted entries (so equal inputs give equal bytes), compressed, holding
`files`, `executables`, the merged contents of `tars`, `dirs`, `symlinks`
and the `/dev/console` node the kernel needs. Two inputs claiming one path are
an error naming both.""",
    attrs = {
        "compression": attr.string(
            doc = "zstd (the kernel needs CONFIG_RD_ZSTD), gzip or none.",
            default = "zstd",
            values = ["zstd", "gzip", "none"],
        ),
        "dirs": attr.string_list(doc = "Empty directories to create (mode 0755)."),
        "format": attr.string(
            doc = "cpio (an initramfs) or tar (the same tree, for the system image's mksystem).",
            default = "cpio",
            values = ["cpio", "tar"],
        ),
        "executables": attr.label_keyed_string_dict(
            doc = "Single-file targets to place at the given absolute paths, mode 0755.",
            allow_files = True,
        ),
        "files": attr.label_keyed_string_dict(
            doc = "Single-file targets to place at the given absolute paths, mode 0644.",
            allow_files = True,
        ),
        "symlinks": attr.string_dict(doc = "Symlinks: absolute path to target."),
        "tars": attr.label_list(
            doc = "Tar archives whose entries are merged in (paths relative to /).",
            allow_files = [".tar"],
        ),
        "_mkinitramfs": attr.label(
            default = "//build/initramfs/cmd/mkinitramfs",
            executable = True,
            cfg = "exec",
        ),
    },
)
