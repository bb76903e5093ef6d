"""Debian binary packages as Bazel repositories, pinned by a lock file.

The packages come from the Debian archive that the toolchain root is made
from: its URL is the repository environment variable APPLIANCE_DEBIAN_MIRROR,
which tools/bazel sets from the host's apt sources. Every .deb is pinned by
its sha256, and chosen files inside it can be pinned too, so a package that
changed on the mirror fails the fetch instead of changing the build.

Lock file (JSON), one entry per repository to create:

    {
      "packages": {
        "<repo name>": {
          "package": "<Debian package name>",
          "version": "<Debian version>",
          "filename": "<path of the .deb below the mirror, pool/...>",
          "sha256": "<sha256 of the .deb>",
          "filegroups": {"<target name>": ["<glob>", ...]},
          "verify_sha256": {"<path inside the package>": "<sha256>"}
        }
      }
    }

Each repository has the package's files (data.tar only; maintainer scripts
are never run), a `files` filegroup of all of them, and one filegroup per
`filegroups` entry.
"""

_MIRROR_ENV = "APPLIANCE_DEBIAN_MIRROR"

def _debian_package_impl(rctx):
    mirror = rctx.os.environ.get(_MIRROR_ENV, "")
    if not mirror:
        fail(("{}: the Debian mirror is unknown: set --repo_env={}=<mirror URL> " +
              "(tools/bazel sets it from the host's apt sources)").format(rctx.attr.package, _MIRROR_ENV))
    url = mirror.rstrip("/") + "/" + rctx.attr.filename
    rctx.download(url = url, output = "package.deb", sha256 = rctx.attr.sha256)
    rctx.extract("package.deb", output = "deb")
    data = [p for p in rctx.path("deb").readdir() if p.basename.startswith("data.tar")]
    if len(data) != 1:
        fail("{}: {} holds no single data.tar.*".format(rctx.attr.package, rctx.attr.filename))
    rctx.extract(data[0])
    rctx.delete("deb")
    rctx.delete("package.deb")

    for path, want in rctx.attr.verify_sha256.items():
        if not rctx.path(path).exists:
            fail("{}: {} is not in {}".format(rctx.attr.package, path, rctx.attr.filename))
        res = rctx.execute(["sha256sum", path])
        if res.return_code != 0:
            fail("{}: failed to hash {}: {}".format(rctx.attr.package, path, res.stderr))
        got = res.stdout.split(" ")[0]
        if got != want:
            fail("{}: {} has sha256 {}, but the lock pins {}".format(rctx.attr.package, path, got, want))

    build = [
        "package(default_visibility = [\"//visibility:public\"])",
        "",
        "filegroup(name = \"files\", srcs = glob([\"usr/**\", \"lib/**\", \"etc/**\", \"boot/**\"], allow_empty = True))",
    ]
    for name, patterns in rctx.attr.filegroups.items():
        build.append("filegroup(name = {}, srcs = glob({}))".format(repr(name), repr(patterns)))
    rctx.file("BUILD.bazel", "\n".join(build) + "\n")

debian_package = repository_rule(
    implementation = _debian_package_impl,
    doc = "One Debian binary package, fetched from the mirror by pool path and sha256, unpacked.",
    attrs = {
        "filegroups": attr.string_list_dict(doc = "Extra filegroups: name to globs of package paths."),
        "filename": attr.string(mandatory = True, doc = "Path of the .deb below the mirror (pool/...)."),
        "package": attr.string(mandatory = True, doc = "Debian package name, for messages."),
        "sha256": attr.string(mandatory = True, doc = "sha256 of the .deb."),
        "verify_sha256": attr.string_dict(doc = "Paths inside the package and their pinned sha256."),
        "version": attr.string(doc = "Debian version, for messages and manifests."),
    },
    environ = [_MIRROR_ENV],
)

def _debian_impl(mctx):
    for mod in mctx.modules:
        for lock in mod.tags.lock:
            data = json.decode(mctx.read(lock.file))
            for name, pkg in data["packages"].items():
                debian_package(
                    name = name,
                    package = pkg["package"],
                    version = pkg.get("version", ""),
                    filename = pkg["filename"],
                    sha256 = pkg["sha256"],
                    filegroups = pkg.get("filegroups", {}),
                    verify_sha256 = pkg.get("verify_sha256", {}),
                )

debian = module_extension(
    implementation = _debian_impl,
    doc = "Creates one repository per package of each lock file (see debian.bzl's module doc).",
    tag_classes = {
        "lock": tag_class(
            doc = "A lock file of pinned Debian packages.",
            attrs = {"file": attr.label(mandatory = True, doc = "The lock file (JSON).")},
        ),
    },
)
