"""oci_from_tarball: an image from a tarball the user already has.

The work is done by `imagetool tarball` (//build/oci/tarball); the rule only
passes paths.
"""

_TOOL = Label("//build/oci/cmd/imagetool")

def _oci_from_tarball_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    args = ctx.actions.args()
    args.add("tarball")
    args.add("--tarball", ctx.file.tarball)
    if ctx.attr.image:
        args.add("--image", ctx.attr.image)
    args.add("--out", out.path)
    args.add("--digest", digest)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [ctx.file.tarball],
        outputs = [out, digest],
        mnemonic = "OciFromTarball",
        progress_message = "Reading image tarball %{input} for %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        OutputGroupInfo(digest = depset([digest])),
    ]

oci_from_tarball = rule(
    implementation = _oci_from_tarball_impl,
    doc = """Reads one image from an image tarball a user already has and
writes it as an OCI image-layout directory (a tree artifact named like the
target), which oci_image accepts as `base` and preseed_bundle as `image`.
The image's digest is also written to `<name>.digest` (output group
`digest`).

Accepted tarballs, plain or gzip- or zstd-compressed (told by their first
bytes, not by the file name):

* `docker save` output and other docker-save tarballs (`manifest.json` with
  `Config`, `RepoTags` and `Layers`, e.g. go-containerregistry's
  `tarball.Write` or `crane pull --format=tarball`). The image gets an OCI
  manifest written the same way every time over its config and its layers
  as they are (a layer's compression is kept); each layer is checked
  against the config's `rootfs.diff_ids`.
* OCI-layout tarballs (`index.json`, `blobs/`): skopeo's `oci-archive:`,
  `ctr export`, `docker save` of Docker 25 and later. The image's index or
  manifest blob is kept byte for byte, so it keeps the digest it was
  published with. An index whose tarball holds only some platforms'
  manifests (`ctr export --platform`) is kept with the held platforms in
  the `dev.appliance-bundler.platforms` annotation of the layout's
  index.json, as a pulled index narrowed to some platforms is.

The build fails, naming the tarball and the reason, if the file is not a
tar (or its compression is corrupt), holds neither index.json nor
manifest.json, has a blob or layer that does not match its digest, has an
entry whose path or link leaves the archive (`..`, an absolute path, a
symlink or hard link pointing outside, an entry below a link), or when the
image to take is missing or ambiguous (the error lists what the tarball
holds).""",
    attrs = {
        "tarball": attr.label(
            doc = "The image tarball: one file, e.g. `image.tar`, `image.tar.gz` or `image.tar.zst`.",
            allow_single_file = True,
            mandatory = True,
        ),
        "image": attr.string(
            doc = """Which image to take, needed when the tarball holds
more than one. For a docker-save tarball: one of its RepoTags, compared
after normalisation (`busybox:1.36` matches `docker.io/library/busybox:1.36`;
a name without tag means `:latest`), or the image ID (the config digest,
`sha256:...`, as `docker images --no-trunc` shows it). For an OCI-layout
tarball: an index.json entry's `io.containerd.image.name` or
`org.opencontainers.image.ref.name` (compared as given and after
normalisation), or the entry's digest `sha256:...`. Empty: the tarball must
hold exactly one image.""",
        ),
        "_tool": attr.label(
            default = _TOOL,
            executable = True,
            cfg = "exec",
            doc = "The imagetool binary.",
        ),
    },
)
