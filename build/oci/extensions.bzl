"""The `oci` module extension: images pulled from registries, pinned by digest.

    oci = use_extension("//build/oci:extensions.bzl", "oci")
    oci.pull(name = "distroless", image = "gcr.example/distroless/static",
             digest = "sha256:...", platforms = ["linux/amd64"],
             mirrors = ["mirror.example/distroless/static"])
    oci.from_lock(lock = "//images:oci.lock.json")
    use_repo(oci, "distroless")

Each image becomes a repository whose target `@<name>//:<name>` (also
`@<name>//:image`) is the image as an OCI layout directory, fetched by a
build action (see pull.bzl for why). A tag alone is refused. `mirrors`
(in oci.pull or a lock file entry) are repositories holding the same image,
tried in order before the image's own; credentials: see pull.bzl.
"""

load(":pull.bzl", "oci_pull_repo")

_PIN_HINT = "add the image with its tag to images/oci.lock.json and run `bazel run //images:update_lock`, or give digest = \"sha256:...\""

def _check(name, image, digest, where):
    if "@" in image:
        fail("%s: image %s of %s: put the digest in `digest`, not in `image`" % (where, image, name))
    if not digest:
        fail("%s: image %s (%s) has no digest. A tag alone is not reproducible and is refused; pin it: %s" % (where, image, name, _PIN_HINT))
    if not digest.startswith("sha256:") or len(digest) != 71:
        fail("%s: image %s (%s): digest %r is not sha256:<64 hex>" % (where, image, name, digest))

def _check_mirrors(name, mirrors, where):
    for m in mirrors:
        if "@" in m or not m or m.startswith("/"):
            fail("%s: mirror %r of %s is not a repository name (host/path, no digest)" % (where, m, name))

# The keys of a lock file: build/oci/pull's Lock and LockEntry.
_LOCK_KEYS = ["images"]
_ENTRY_KEYS = ["name", "image", "tag", "digest", "platforms", "manifests", "mirrors"]
_HEX = "0123456789abcdef"

def _sha256(d):
    return type(d) == "string" and d.startswith("sha256:") and len(d) == 71 and not [c for c in d[7:].elems() if c not in _HEX]

def _check_lock(lock, data):
    """Refuses what build/oci/pull's ReadLock (`bazel run //images:update_lock`) refuses, with its messages.

    build/oci/tests/pull feeds both the same bad locks and compares the
    messages. What json.decode cannot see (a key given twice in one object)
    update_lock refuses when it runs.
    """
    parse = "failed to parse lock file %s" % lock
    if type(data) != "dict":
        fail("%s: not a JSON object" % parse)
    for k in data:
        if k not in _LOCK_KEYS:
            fail("%s: unknown key %s (keys are case-sensitive)" % (parse, json.encode(k)))
    seen = {}
    for i, e in enumerate(data.get("images", [])):
        if type(e) != "dict":
            fail("%s: images[%d] is not an object" % (parse, i))
        for k in e:
            if k not in _ENTRY_KEYS:
                fail("%s: unknown key %s (keys are case-sensitive)" % (parse, json.encode(k)))
        if not e.get("name") or not e.get("image"):
            fail("lock file %s: images[%d] needs a name and an image" % (lock, i))
        if e["name"] in seen:
            fail("lock file %s: name %s is used twice" % (lock, json.encode(e["name"])))
        seen[e["name"]] = True
        where = "lock file %s: images[%d] (%s)" % (lock, i, e["name"])
        if "digest" in e and not _sha256(e["digest"]):
            fail("%s: digest %s is not sha256:<64 hex digits>" % (where, json.encode(e["digest"])))
        for p, d in e.get("manifests", {}).items():
            if not _sha256(d):
                fail("%s: manifests[%s]: digest %s is not sha256:<64 hex digits>" % (where, p, json.encode(d)))

def _oci_impl(mctx):
    images = {}
    for mod in mctx.modules:
        for lock in mod.tags.from_lock:
            data = json.decode(mctx.read(mctx.path(lock.lock)))
            _check_lock(lock.lock, data)
            for e in data.get("images", []):
                where = "lock file %s" % lock.lock
                _check(e["name"], e["image"], e.get("digest", ""), where)
                _check_mirrors(e["name"], e.get("mirrors", []), where)
                images[e["name"]] = struct(image = e["image"], digest = e["digest"], platforms = e.get("platforms", []), mirrors = e.get("mirrors", []), where = where)
        for p in mod.tags.pull:
            _check(p.name, p.image, p.digest, "oci.pull")
            _check_mirrors(p.name, p.mirrors, "oci.pull")
            if p.name in images:
                fail("oci.pull: image name %s is already defined in %s" % (p.name, images[p.name].where))
            images[p.name] = struct(image = p.image, digest = p.digest, platforms = p.platforms, mirrors = p.mirrors, where = "oci.pull")
    for name, i in images.items():
        oci_pull_repo(name = name, image_name = name, image = i.image, digest = i.digest, platforms = i.platforms, mirrors = i.mirrors)

oci = module_extension(
    implementation = _oci_impl,
    doc = "Makes one repository per pinned image; see the file's docstring.",
    tag_classes = {
        "pull": tag_class(
            doc = "One image, as rules_oci's oci_pull.",
            attrs = {
                "name": attr.string(doc = "Repository name.", mandatory = True),
                "image": attr.string(doc = "Repository, e.g. `docker.io/library/busybox`; a tag here is ignored.", mandatory = True),
                "digest": attr.string(doc = "Required `sha256:` digest of the index or manifest."),
                "platforms": attr.string_list(doc = "`os/arch[/variant]` to keep from an index; empty keeps all."),
                "mirrors": attr.string_list(doc = "Repositories holding the same image, tried in order before `image`; every blob is checked against `digest`."),
            },
        ),
        "from_lock": tag_class(
            doc = "Every image of a lock file written by an oci_lock_update target.",
            attrs = {
                "lock": attr.label(doc = "The lock file.", mandatory = True),
            },
        ),
    },
)
