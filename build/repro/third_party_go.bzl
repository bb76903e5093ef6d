"""third_party_go: the compiled Go packages of other modules that a target needs.

An aspect for build/repro/check.sh. Applied to the targets the check
compares, it gives, in output group `third_party_go`, the archives of every
Go package from an external repository (Go modules, rules_go's own) and the
Go standard library, each in the configuration the target really builds it
in (the kubelet's pure transition, exec tools), and nothing of this module.
The check builds that group first with the disk cache, so that its second,
uncached build reruns only this module's actions and every Go link.
"""

# GoStdLib is not exported by @rules_go//go:def.bzl; the standard library
# is found by it.
load("@rules_go//go:def.bzl", "GoArchive")
load("@rules_go//go/private:providers.bzl", "GoStdLib")  # buildifier: disable=bzl-visibility

def _external(label):
    # Labels of this module have an empty workspace name.
    return label.workspace_name != ""

def _third_party_go_impl(target, ctx):
    direct = []
    transitive = []

    # The aspect visits every package of the graph, so each contributes its
    # own archive only.
    if GoArchive in target and _external(target.label):
        data = target[GoArchive].data
        direct = [f for f in [data.file, data.export_file, data.facts_file] if f]
    if GoStdLib in target:
        transitive.append(target[GoStdLib].libs)
    for attr in dir(ctx.rule.attr):
        for dep in _deps(getattr(ctx.rule.attr, attr)):
            if OutputGroupInfo in dep and "third_party_go" in dep[OutputGroupInfo]:
                transitive.append(dep[OutputGroupInfo].third_party_go)
    return [OutputGroupInfo(third_party_go = depset(direct, transitive = transitive))]

def _deps(value):
    """The targets an attribute value holds (a label, a list, a dict)."""
    if type(value) == "Target":
        return [value]
    if type(value) == "list":
        return [v for v in value if type(v) == "Target"]
    if type(value) == "dict":
        return [k for k in value.keys() if type(k) == "Target"] + [v for v in value.values() if type(v) == "Target"]
    return []

third_party_go = aspect(
    implementation = _third_party_go_impl,
    attr_aspects = ["*"],
    doc = "Output group third_party_go: the compiled Go packages of other repositories and the Go standard library that a target's build needs.",
)
