"""static_go_binary: a go_binary, possibly from another module, linked statically."""

_STATIC = str(Label("@rules_go//go/config:static"))
_TAGS = str(Label("@rules_go//go/config:tags"))

def _static_transition_impl(settings, _attr):
    # Pure-Go user and DNS lookups: glibc's NSS cannot work in a static binary.
    tags = [t for t in settings[_TAGS] if t not in ("netgo", "osusergo")]
    return {_STATIC: True, _TAGS: tags + ["netgo", "osusergo"]}

_static_transition = transition(
    implementation = _static_transition_impl,
    inputs = [_TAGS],
    outputs = [_STATIC, _TAGS],
)

def _static_go_binary_impl(ctx):
    binary = ctx.attr.binary[0][DefaultInfo].files_to_run.executable
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.symlink(output = out, target_file = binary, is_executable = True)
    return [DefaultInfo(
        files = depset([out]),
        executable = out,
        runfiles = ctx.runfiles(files = [out]),
    )]

static_go_binary = rule(
    implementation = _static_go_binary_impl,
    doc = """Builds `binary` with `@rules_go//go/config:static` set, so the result
runs on the appliance with no shared libraries (cgo included), and exposes it
under this target's name. Use it for binaries of third-party Go modules, whose
go_binary targets cannot be given `static = "on"`.""",
    attrs = {
        "binary": attr.label(
            doc = "The go_binary to link statically.",
            mandatory = True,
            cfg = _static_transition,
        ),
        "_allowlist_function_transition": attr.label(
            default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
        ),
    },
    executable = True,
)
