"""static_pod: a pod the appliance's kubelet starts at boot, its images pinned
to the preseed bundles that provide them.

The work is done by //build/pods/cmd/podtool (package
//build/pods/staticpod); the rule only passes paths and a JSON spec.
"""

load("//build/appliance:node.bzl", "STATIC_POD_DIR")
load("//build/oci:defs.bzl", "PreseedBundleInfo")

_TOOL = Label("//build/pods/cmd/podtool")

StaticPodInfo = provider(
    doc = "A static pod and where it goes in the appliance.",
    fields = {
        "name": "The pod's name: its metadata.name, which the rule's `pod_name` gives.",
        "file": "The pinned pod manifest (`<name>.pinned.yaml`).",
        "path": "Its absolute path in the appliance: /etc/kubernetes/manifests/<name>.yaml.",
        "pod_json": "`<name>.pod.json`: {name, path, images: [{container, image}]}, each image the digest reference (`repo@sha256:...`) the container runs, init containers first. A file, because the digests are known only when the bundles are built.",
        "bundles": "List of the bundle Files given: the appliance must preseed them, or the pod cannot start.",
    },
)

_StrictPrivilegesInfo = provider(
    doc = "The value of the strict_privileges build setting.",
    fields = {"value": "True: static_pod fails on privileges a pod gives no reason for."},
)

def _strict_privileges_flag_impl(ctx):
    return [_StrictPrivilegesInfo(value = ctx.build_setting_value)]

strict_privileges_flag = rule(
    implementation = _strict_privileges_flag_impl,
    build_setting = config.bool(flag = True),
    doc = """A boolean command-line flag (`//build/pods:strict_privileges`): set,
every static_pod that asks for privileges (a privileged container, added
capabilities, an Unconfined seccomp profile) without the annotation
`appliance-bundler.dev/privilege-reason` fails the build; unset, it builds
with a warning naming the file and each privilege.""",
)

def _static_pod_impl(ctx):
    pod_name = ctx.attr.pod_name or ctx.label.name
    path = "%s/%s.yaml" % (STATIC_POD_DIR, pod_name)

    # Not <name>.yaml: that may well be the source's own name (pod.yaml).
    out = ctx.actions.declare_file(ctx.label.name + ".pinned.yaml")
    pod_json = ctx.actions.declare_file(ctx.label.name + ".pod.json")
    infos = [b[PreseedBundleInfo] for b in ctx.attr.bundles]
    bundles = [info.file for info in infos]
    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec, json.encode({"bundles": [
        {"file": info.file.path, "namespace": info.namespace}
        for info in infos
    ]}))
    args = ctx.actions.args()
    args.add("pin")
    args.add("--src", ctx.file.src)
    args.add("--name", pod_name)
    args.add("--path", path)
    args.add("--spec", spec)
    args.add("--out", out)
    args.add("--info", pod_json)
    if ctx.attr._strict_privileges[_StrictPrivilegesInfo].value:
        args.add("--strict_privileges")
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [ctx.file.src, spec] + bundles,
        outputs = [out, pod_json],
        mnemonic = "StaticPod",
        progress_message = "Pinning the images of static pod %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        StaticPodInfo(
            name = pod_name,
            file = out,
            path = path,
            pod_json = pod_json,
            bundles = bundles,
        ),
        OutputGroupInfo(pod_json = depset([pod_json])),
    ]

static_pod = rule(
    implementation = _static_pod_impl,
    doc = """A pod manifest for the appliance's kubelet, placed by the appliance
at /etc/kubernetes/manifests/<pod_name>.yaml.

The manifest is parsed strictly with Kubernetes' own API types: YAML that
does not parse, an unknown or duplicate field, another kind than v1 Pod, more
than one document, or a metadata.name other than `pod_name` fails the build,
naming the file and the reason. Each container's and init container's image
must be a name one of `bundles` registers (its tag, `repo@<index digest>` or
`repo@<manifest digest>`, normalised as the CRI does: `hello:1.0` is
`docker.io/library/hello:1.0`, a name alone is `:latest`); it is replaced by
that bundle's `repo@<target digest>`, the name preseed registers, so that a
moved tag cannot change what runs, and `imagePullPolicy` is set to `Never`.
An image no bundle provides fails the build, naming the pod, the file and the
image, and listing the names the bundles provide. A pod that asks for
privileges (a privileged container, added capabilities, an Unconfined seccomp
profile) without saying why in the annotation
`appliance-bundler.dev/privilege-reason` builds with a warning naming each,
or fails with `--//build/pods:strict_privileges`.

Outputs: `<name>.pinned.yaml`, the pinned manifest (deterministic bytes, keys
sorted), and `<name>.pod.json` (output group `pod_json`) for the release
manifest; StaticPodInfo describes both.""",
    attrs = {
        "src": attr.label(
            doc = "The pod manifest: one YAML document of a v1 Pod.",
            allow_single_file = [".yaml", ".yml"],
            mandatory = True,
        ),
        "bundles": attr.label_list(
            doc = "preseed_bundle targets (namespace `k8s.io`, the CRI's) providing the pod's images; the appliance must preseed them too.",
            providers = [PreseedBundleInfo],
        ),
        "pod_name": attr.string(
            doc = "The pod's metadata.name, which the manifest must give; defaults to the target's name. Stated here so that the appliance can place the file without reading it.",
        ),
        "_strict_privileges": attr.label(
            default = Label("//build/pods:strict_privileges"),
            providers = [_StrictPrivilegesInfo],
            doc = "The strict_privileges flag.",
        ),
        "_tool": attr.label(
            default = _TOOL,
            executable = True,
            cfg = "exec",
            doc = "The podtool binary.",
        ),
    },
)
