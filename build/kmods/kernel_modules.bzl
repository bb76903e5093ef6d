"""kernel_modules: the kernel modules an appliance needs, with their dependencies."""

def _kernel_modules_impl(ctx):
    files = ctx.files.srcs
    anchor = "/kernel/"
    dirs = {f.path[:f.path.index(anchor)]: True for f in files if anchor in f.path}
    if len(dirs) != 1:
        fail("srcs must hold the modules of exactly one kernel release, found {}".format(sorted(dirs.keys())))
    modules_dir = dirs.keys()[0]
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    args = ctx.actions.args()
    args.add("-modules_dir", modules_dir)
    args.add("-out", out)
    args.add_all(ctx.attr.modules)
    ctx.actions.run(
        executable = ctx.executable._kmods,
        arguments = [args],
        inputs = files,
        outputs = [out],
        mnemonic = "KernelModules",
        progress_message = "Selecting kernel modules for %{label}",
    )
    return [DefaultInfo(files = depset([out]))]

kernel_modules = rule(
    implementation = _kernel_modules_impl,
    doc = """Selects kernel modules and their dependencies (from each module's
.modinfo) into a tar for the initramfs: `lib/modules/<release>/kernel/...ko`
(decompressed), `lib/modules/<release>/modules.dep`, and
`etc/modules-load.d/appliance.conf` listing `modules`, which init loads in
dependency order at boot.""",
    attrs = {
        "modules": attr.string_list(
            doc = "Names of the modules to load at boot; dependencies are added.",
            mandatory = True,
        ),
        "srcs": attr.label(
            doc = "The kernel's module files (`lib/modules/<release>/kernel/**`).",
            mandatory = True,
            allow_files = True,
        ),
        "_kmods": attr.label(
            default = "//build/kmods/cmd/kmods",
            executable = True,
            cfg = "exec",
        ),
    },
)
