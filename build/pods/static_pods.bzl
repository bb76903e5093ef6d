"""static_pods: the static pods of one appliance, checked against its preseed
manifest, as a tar of /etc/kubernetes/manifests.

The work is done by `podtool tree` (staticpod.WriteTree).
"""

load(":static_pod.bzl", "StaticPodInfo")

def _static_pods_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    listing = ctx.actions.declare_file(ctx.label.name + ".json")
    infos = [p[StaticPodInfo] for p in ctx.attr.pods]
    spec = ctx.actions.declare_file(ctx.label.name + ".pods.json")
    ctx.actions.write(spec, json.encode({"pods": [
        {"file": info.file.path, "name": info.name}
        for info in infos
    ]}))
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [
            "tree",
            "--spec",
            spec.path,
            "--preseed_manifest",
            ctx.file.preseed_manifest.path,
            "--out",
            out.path,
            "--pods_json",
            listing.path,
        ],
        inputs = [spec, ctx.file.preseed_manifest] + [info.file for info in infos],
        outputs = [out, listing],
        mnemonic = "StaticPods",
        progress_message = "Checking and placing static pods %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        OutputGroupInfo(tar = depset([out]), pods_json = depset([listing])),
    ]

static_pods = rule(
    implementation = _static_pods_impl,
    doc = """The static pods of an appliance: `<name>.tar` holds
etc/kubernetes/manifests/ (present even with no pods) and each pod's pinned
manifest at etc/kubernetes/manifests/<pod name>.yaml (directories 0755, files
0644, owner 0:0, mtime 0, sorted), for the initramfs' `tars`; output group
`pods_json` is `<name>.json`, {"pods": [{name, path, images: [{container,
image}]}]} sorted by name, for the release manifest.

The build fails, naming the pod, the image and the preseed manifest, when a
container's image (its digest reference) is none of the references of a
bundle that `preseed_manifest` lists in namespace k8s.io: the appliance would
hold a pod whose image it does not preseed, and the kubelet never pulls. Two
pods of one name fail too.""",
    attrs = {
        "pods": attr.label_list(
            doc = "static_pod targets.",
            providers = [StaticPodInfo],
        ),
        "preseed_manifest": attr.label(
            doc = "The appliance's preseed manifest (a preseed_tree's `manifest` output group).",
            allow_single_file = [".json"],
            mandatory = True,
        ),
        "_tool": attr.label(
            default = Label("//build/pods/cmd/podtool"),
            executable = True,
            cfg = "exec",
            doc = "The podtool binary.",
        ),
    },
)
