"""Image rules: layers from files, oci_image, preseed bundles and trees.

Rule and attribute names follow rules_oci (oci_image's attributes, an OCI
image-layout directory as its output), so that targets can move between
these rules and rules_oci. The work is done by //build/oci/cmd/imagetool
(layers, images) and //build/oci/cmd/bundletool (bundles, trees); the rules
only pass paths and a JSON spec.
"""

load("//third_party/erofs-utils:mkfs_erofs.bzl", "mkfs_erofs_args", "mkfs_erofs_attrs")
load(":bundle_format.bzl", "BUNDLE_EXTENSIONS", "PRESEED_ROOT")
load(":index.bzl", _oci_image_index = "oci_image_index")
load(":tarball.bzl", _oci_from_tarball = "oci_from_tarball")

# Rules of their own files, loadable from here as from rules_oci's defs.bzl.
oci_image_index = _oci_image_index
oci_from_tarball = _oci_from_tarball

# Each rule runs only the tool of its job, so an edit to another's code
# (bundles, pulls) reruns none of its actions.
_IMAGETOOL = Label("//build/oci/cmd/imagetool")
_BUNDLETOOL = Label("//build/oci/cmd/bundletool")

PreseedBundleInfo = provider(
    doc = "A preseed bundle (docs/bundle-format.md) and where it belongs.",
    fields = {
        "file": "The bundle file.",
        "namespace": "The containerd namespace to import it into.",
        "bundle_name": "Its file name in /containerd/preseed/<namespace>/, without extension.",
        "reference": "The image reference it names, as given.",
        "compression": "\"\", \"gzip\" or \"zstd\".",
        "erofs_cache": "Whether preseed_tree converts its layers into the appliance's EROFS layer content cache and places it slim.",
    },
)

PreseedTreeInfo = provider(
    doc = "Bundles placed at their paths in the appliance's root filesystem.",
    fields = {
        "files": "Dict of absolute path in the appliance to File: each bundle as preseed_bundle wrote it, whole (the tar holds bundles with erofs_cache slim).",
        "manifest": "The JSON manifest of every bundle.",
    },
)

def _tool_attr(tool):
    return attr.label(
        default = tool,
        executable = True,
        cfg = "exec",
        doc = "The tool the rule runs.",
    )

def _single_file(target, what):
    files = target[DefaultInfo].files.to_list()
    if target[DefaultInfo].files_to_run and target[DefaultInfo].files_to_run.executable:
        return target[DefaultInfo].files_to_run.executable
    if len(files) != 1:
        fail("%s %s must provide exactly one file, it provides %d" % (what, target.label, len(files)))
    return files[0]

def _layer_tar_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    files = []
    inputs = []
    for target, path in ctx.attr.files.items():
        f = _single_file(target, "file")
        inputs.append(f)
        files.append({"mode": int(ctx.attr.mode, 8), "path": path, "source": f.path})
    spec = ctx.actions.declare_file(ctx.label.name + ".layer.json")
    ctx.actions.write(spec, json.encode({"files": files}))
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["layer", "--spec", spec.path, "--out", out.path],
        inputs = inputs + [spec],
        outputs = [out],
        mnemonic = "OciLayer",
        progress_message = "Writing layer %{label}",
    )
    return [DefaultInfo(files = depset([out]))]

layer_tar = rule(
    implementation = _layer_tar_impl,
    doc = """A deterministic, uncompressed layer tar: each file at its absolute
path, parent directories 0755, owner 0:0 without names, mtime 0, sorted.
Use it in oci_image's `tars`.""",
    attrs = {
        "files": attr.label_keyed_string_dict(
            doc = "Map of target (one file, or an executable) to its absolute path in the image, e.g. `{\":hello_bin\": \"/hello\"}`.",
            allow_files = True,
            mandatory = True,
        ),
        "mode": attr.string(
            doc = "Octal mode of every file.",
            default = "0755",
        ),
        "_tool": _tool_attr(_IMAGETOOL),
    },
)

def go_layer(name, binary, path, mode = "0755", **kwargs):
    """Turns a go_binary into a layer tar holding it at `path`.

    The go_binary should be static (`pure = "on"` or `static = "on"`): the
    image has no C library.

    Args:
      name: the layer_tar target's name.
      binary: label of the go_binary.
      path: absolute path of the binary in the image, e.g. "/hello".
      mode: octal mode of the binary.
      **kwargs: passed to layer_tar (visibility, tags, ...).
    """
    layer_tar(
        name = name,
        files = {binary: path},
        mode = mode,
        **kwargs
    )

def _layout_dir(target, what):
    files = target[DefaultInfo].files.to_list()
    if len(files) != 1 or not files[0].is_directory:
        fail("%s %s must provide exactly one OCI layout directory" % (what, target.label))
    return files[0]

def _list_or_none(values):
    return values if values else None

def _has_constraint(ctx, target):
    return ctx.target_platform_has_constraint(target[platform_common.ConstraintValueInfo])

def _target_platform(ctx):
    """The OCI os and architecture of Bazel's target platform, or "" each."""
    goos = "linux" if _has_constraint(ctx, ctx.attr._os_linux) else ""
    arch = ""
    if _has_constraint(ctx, ctx.attr._cpu_x86_64):
        arch = "amd64"
    elif _has_constraint(ctx, ctx.attr._cpu_aarch64):
        arch = "arm64"
    return goos, arch

def _oci_image_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    inputs = list(ctx.files.tars)
    base = ""
    if ctx.attr.base:
        base_dir = _layout_dir(ctx.attr.base, "base")
        inputs.append(base_dir)
        base = base_dir.path
    spec = ctx.actions.declare_file(ctx.label.name + ".image.json")
    target_os, target_arch = _target_platform(ctx)
    ctx.actions.write(spec, json.encode({
        "annotations": ctx.attr.annotations,
        "architecture": ctx.attr.architecture,
        "base": base,
        "cmd": _list_or_none(ctx.attr.cmd),
        "entrypoint": _list_or_none(ctx.attr.entrypoint),
        "env": ctx.attr.env,
        "exposed_ports": ctx.attr.exposed_ports,
        "labels": ctx.attr.labels,
        "layers": [t.path for t in ctx.files.tars],
        "os": ctx.attr.os,
        "target_architecture": target_arch,
        "target_os": target_os,
        "user": ctx.attr.user,
        "variant": ctx.attr.variant,
        "volumes": ctx.attr.volumes,
        "workdir": ctx.attr.workdir,
    }))
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["image", "--spec", spec.path, "--out", out.path, "--digest", digest.path],
        inputs = inputs + [spec],
        outputs = [out, digest],
        mnemonic = "OciImage",
        progress_message = "Building image %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        OutputGroupInfo(digest = depset([digest])),
    ]

oci_image = rule(
    implementation = _oci_image_impl,
    doc = """Builds a single-platform container image as an OCI image-layout
directory (a tree artifact named like the target), as rules_oci's oci_image
does. The same inputs always give the same digest: layers are written with
fixed metadata and compressed with a fixed gzip header, and the config's
`created` and history times are the Unix epoch. The manifest digest is also
written to `<name>.digest` (output group `digest`).""",
    attrs = {
        "base": attr.label(
            doc = "An OCI layout directory to build on (an oci_image or a pulled image). From a multi-platform layout, the manifest for `os`/`architecture` is used; without them, the only platform the layout holds (a pull narrowed to one), else the target platform's, as rules_oci does.",
            allow_files = True,
        ),
        "tars": attr.label_list(
            doc = "Uncompressed layer tars (e.g. from go_layer or layer_tar), applied in order.",
            allow_files = [".tar"],
        ),
        "entrypoint": attr.string_list(doc = "Config Entrypoint. Setting it drops the base's Cmd unless `cmd` is set too."),
        "cmd": attr.string_list(doc = "Config Cmd: default arguments to the entrypoint."),
        "env": attr.string_dict(doc = "Environment variables, added to the base's; values may use $NAME or ${NAME} of the base's variables."),
        "workdir": attr.string(doc = "Config WorkingDir."),
        "user": attr.string(doc = "Config User, e.g. \"65534:65534\"."),
        "labels": attr.string_dict(doc = "Config Labels, added to the base's."),
        "annotations": attr.string_dict(doc = "Manifest annotations."),
        "exposed_ports": attr.string_list(doc = "Config ExposedPorts, e.g. [\"8080/tcp\"]."),
        "volumes": attr.string_list(doc = "Config Volumes, e.g. [\"/data\"]."),
        "os": attr.string(doc = "Config os; required without a base, else taken from it."),
        "architecture": attr.string(doc = "Config architecture; required without a base, else taken from it."),
        "variant": attr.string(doc = "Config variant, e.g. \"v8\" for arm64."),
        "_cpu_aarch64": attr.label(default = "@platforms//cpu:aarch64", doc = "Target CPU arm64, for a base's platform."),
        "_cpu_x86_64": attr.label(default = "@platforms//cpu:x86_64", doc = "Target CPU amd64, for a base's platform."),
        "_os_linux": attr.label(default = "@platforms//os:linux", doc = "Target OS linux, for a base's platform."),
        "_tool": _tool_attr(_IMAGETOOL),
    },
)

def _preseed_bundle_impl(ctx):
    name = ctx.attr.bundle_name or ctx.label.name
    ext = BUNDLE_EXTENSIONS[ctx.attr.compression]
    out = ctx.actions.declare_file(ctx.label.name + ext)
    layout = _layout_dir(ctx.attr.image, "image")
    args = ctx.actions.args()
    args.add("bundle")
    args.add("--layout", layout.path)
    args.add("--ref", ctx.attr.reference)
    args.add("--compression", ctx.attr.compression)
    args.add_all(ctx.attr.platforms, before_each = "--platform")
    args.add("--out", out.path)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [layout],
        outputs = [out],
        mnemonic = "PreseedBundle",
        progress_message = "Bundling %{label} as " + ctx.attr.reference,
    )
    return [
        DefaultInfo(files = depset([out])),
        PreseedBundleInfo(
            file = out,
            namespace = ctx.attr.namespace,
            bundle_name = name,
            reference = ctx.attr.reference,
            compression = ctx.attr.compression,
            erofs_cache = ctx.attr.erofs_cache,
        ),
    ]

preseed_bundle = rule(
    implementation = _preseed_bundle_impl,
    doc = """Writes one image as a preseed bundle (docs/bundle-format.md): an
OCI image layout in one deterministic tar whose index.json names the image by
its fully normalised reference, importable unchanged by `ctr images import`
and containerd's `client.Import` (a compressed bundle: by `ctr images import`
or after decompression).""",
    attrs = {
        "image": attr.label(
            doc = "The image: an OCI layout directory from oci_image or a pulled image.",
            mandatory = True,
            allow_files = True,
        ),
        "reference": attr.string(
            doc = "The name containerd gives the image, e.g. `docker.io/library/hello:1.0`; normalised (`hello:1.0` becomes `docker.io/library/hello:1.0`). A tag or digest is required.",
            mandatory = True,
        ),
        "namespace": attr.string(
            doc = "The containerd namespace to import into; `k8s.io` for images the CRI uses.",
            default = "k8s.io",
        ),
        "platforms": attr.string_list(
            doc = "os/arch[/variant] to keep from an index, e.g. [\"linux/amd64\"]; its other platforms are left out, the index blob and so the image's digest stay; empty keeps all.",
        ),
        "bundle_name": attr.string(
            doc = "File name (without extension) under /containerd/preseed/<namespace>/; defaults to the target name.",
        ),
        "compression": attr.string(
            doc = "Compression of the bundle file: \"\" (none), \"gzip\" or \"zstd\".",
            default = "",
            values = BUNDLE_EXTENSIONS.keys(),
        ),
        "erofs_cache": attr.bool(
            doc = """Whether preseed_tree converts the image's layers at build time into the
appliance's EROFS layer content cache (/containerd/erofs-cache, one blob per
diffID with a dm-verity hash tree) and places the bundle without them (slim,
docs/bundle-format.md). False places the bundle whole: containerd's EROFS
differ converts its layers on the node at first boot (slower, and the layers
are then written to the data partition). This target's own output is always whole.""",
            default = True,
        ),
        "_tool": _tool_attr(_BUNDLETOOL),
    },
)

def _preseed_tree_impl(ctx):
    out = ctx.outputs.tar
    manifest = ctx.outputs.manifest
    bundles = []
    files = {}
    for b in ctx.attr.bundles:
        info = b[PreseedBundleInfo]
        ext = BUNDLE_EXTENSIONS[info.compression]
        path = "%s/%s/%s%s" % (PRESEED_ROOT, info.namespace, info.bundle_name, ext)
        if path in files:
            fail("bundles %s and %s both go to %s" % (files[path].owner, b.label, path))
        files[path] = info.file
        bundles.append({
            "compression": info.compression,
            "erofs_cache": info.erofs_cache,
            "file": info.file.path,
            "name": info.bundle_name,
            "namespace": info.namespace,
        })
    spec = ctx.actions.declare_file(ctx.label.name + ".tree.json")
    ctx.actions.write(spec, json.encode({"bundles": bundles}))
    args = ctx.actions.args()
    args.add_all(["tree", "--spec", spec, "--out", out, "--manifest", manifest])

    # The pinned mkfs.erofs (the appliance's own) converts the layers, never
    # one from PATH.
    mkfs = mkfs_erofs_args(ctx, args)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [spec] + files.values(),
        tools = mkfs,
        outputs = [out, manifest],
        mnemonic = "PreseedTree",
        progress_message = "Placing preseed bundles %{label}",
    )
    return [
        DefaultInfo(files = depset([out, manifest])),
        PreseedTreeInfo(files = files, manifest = manifest),
    ]

preseed_tree = rule(
    implementation = _preseed_tree_impl,
    doc = """Places bundles at /containerd/preseed/<namespace>/<bundle_name>.tar[.gz|.zst]:
as a tar (`<name>.tar`, a predeclared output, like `<name>.json`: directories 0755, files 0644, owner 0:0, mtime 0,
sorted, paths relative to the root) for an appliance rule to unpack, as a
dict of path to file (PreseedTreeInfo) for a rule that maps files itself, and
`<name>.json`: for each bundle its namespace, name, path, reference, index.json
digest, target descriptor, manifest digests with platforms, the references
pods may name it by (tag, repo@index digest, repo@manifest digest), size and sha256,
sorted by path.

The layers of every bundle with `erofs_cache` (the default) are converted,
once per diffID, into EROFS blobs with a dm-verity hash tree at
/containerd/erofs-cache/sha256/<xx>/<diffID hex>.erofs in the tar (without the
`.dmverity` sidecar: the system partition's dm-verity covers the cache, and
containerd mounts a blob without a sidecar from its file), and the bundle is
placed without them; its manifest entry lists them
(`cached_layers`: digest, diff_id, path, size, root_hash) and its size and
sha256 are the slim file's. The conversion runs the pinned mkfs.erofs of
//third_party/erofs-utils, the appliance's own, never one from PATH.""",
    attrs = {
        "bundles": attr.label_list(
            doc = "preseed_bundle targets.",
            providers = [PreseedBundleInfo],
            mandatory = True,
        ),
        "_tool": _tool_attr(_BUNDLETOOL),
    } | mkfs_erofs_attrs(),
    outputs = {"manifest": "%{name}.json", "tar": "%{name}.tar"},
)
