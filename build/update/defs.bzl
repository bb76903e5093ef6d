"""Update payloads (core/updatepayload) and the updater's configuration (core/updater/config).

- `update_payload`: a system image and its UKI as a payload's files, unsigned.
- `signed_update_payload`: a payload signed with a key label; for tests (a
  release is signed out of the build with signupdate).
- `test_signing_key`: an Ed25519 key pair derived from a seed, for tests.
- `update_config`: the updater's configuration, checked at build time.
"""

load("//build/appliance:disk.bzl", "SystemImageInfo")

UpdatePayloadInfo = provider(
    doc = "An update payload's files.",
    fields = {
        "manifest": "File: manifest.json.",
        "signature": "File: manifest.json.sig, or None when unsigned.",
        "system": "File: system.img.zst.",
        "uki": "File: uki.efi.",
    },
)

def _update_payload_impl(ctx):
    manifest = ctx.actions.declare_file(ctx.label.name + "/manifest.json")
    system = ctx.actions.declare_file(ctx.label.name + "/system.img.zst")
    uki = ctx.actions.declare_file(ctx.label.name + "/uki.efi")
    info = ctx.attr.system[SystemImageInfo]
    args = ctx.actions.args()
    args.add("-system", info.image)
    args.add("-system-info", info.info)
    args.add("-uki", ctx.file.uki)
    args.add("-manifest", manifest)
    args.add("-system-out", system)
    args.add("-uki-out", uki)
    ctx.actions.run(
        executable = ctx.executable._mkupdate,
        arguments = [args],
        inputs = [info.image, info.info, ctx.file.uki],
        outputs = [manifest, system, uki],
        mnemonic = "UpdatePayload",
        progress_message = "Writing the update payload %{label}",
    )
    return [
        DefaultInfo(files = depset([manifest, system, uki])),
        OutputGroupInfo(manifest = depset([manifest])),
        UpdatePayloadInfo(manifest = manifest, signature = None, system = system, uki = uki),
    ]

update_payload = rule(
    implementation = _update_payload_impl,
    doc = """An update payload, unsigned: `<name>/manifest.json` (version from the
UKI's IMAGE_VERSION, root hash, sizes, sha256s), `<name>/system.img.zst` and
`<name>/uki.efi`; output group `manifest`: the manifest alone (it pins the
other files by sha256). Sign it with signupdate to publish it.""",
    attrs = {
        "system": attr.label(providers = [SystemImageInfo], mandatory = True, doc = "The system_image."),
        "uki": attr.label(allow_single_file = [".efi"], mandatory = True, doc = "The uki that boots `system`; the build fails if it boots another."),
        "_mkupdate": attr.label(default = Label("//build/update/cmd/mkupdate"), executable = True, cfg = "exec"),
    },
)

def _signed_update_payload_impl(ctx):
    p = ctx.attr.payload[UpdatePayloadInfo]
    files = {}
    for f in [p.manifest, p.system, p.uki]:
        out = ctx.actions.declare_file(ctx.label.name + "/" + f.basename)
        ctx.actions.symlink(output = out, target_file = f)
        files[f.basename] = out
    sig = ctx.actions.declare_file(ctx.label.name + "/manifest.json.sig")
    ctx.actions.run(
        executable = ctx.executable._signupdate,
        arguments = ["-key", ctx.file.key.path, "-manifest", p.manifest.path, "-sig", sig.path],
        inputs = [ctx.file.key, p.manifest],
        outputs = [sig],
        mnemonic = "SignUpdate",
        progress_message = "Signing the update payload %{label}",
    )
    return [
        DefaultInfo(files = depset(files.values() + [sig])),
        UpdatePayloadInfo(manifest = files["manifest.json"], signature = sig, system = files["system.img.zst"], uki = files["uki.efi"]),
    ]

signed_update_payload = rule(
    implementation = _signed_update_payload_impl,
    doc = """`payload` signed with `key`, in `<name>/`: for tests, whose key is a
test_signing_key. A release's key must stay out of the build: sign it with
`bazel run //build/update/cmd/signupdate`.""",
    attrs = {
        "key": attr.label(allow_single_file = True, mandatory = True, doc = "The Ed25519 private key (PEM, PKCS #8)."),
        "payload": attr.label(providers = [UpdatePayloadInfo], mandatory = True, doc = "An update_payload."),
        "_signupdate": attr.label(default = Label("//build/update/cmd/signupdate"), executable = True, cfg = "exec"),
    },
)

def _test_signing_key_impl(ctx):
    priv = ctx.actions.declare_file(ctx.label.name + ".pem")
    pub = ctx.actions.declare_file(ctx.label.name + ".pub.pem")
    ctx.actions.run(
        executable = ctx.executable._testkey,
        arguments = ["-seed", ctx.attr.seed, "-private", priv.path, "-public", pub.path],
        outputs = [priv, pub],
        mnemonic = "TestSigningKey",
    )
    return [
        DefaultInfo(files = depset([priv])),
        OutputGroupInfo(public = depset([pub])),
    ]

test_signing_key = rule(
    implementation = _test_signing_key_impl,
    doc = """An Ed25519 key pair from `seed`, for tests: `<name>.pem` (private,
the default output) and `<name>.pub.pem` (output group `public`). Must be
testonly: anyone can derive it.""",
    attrs = {
        "seed": attr.string(mandatory = True, doc = "The seed string."),
        "_testkey": attr.label(default = Label("//build/update/cmd/testkey"), executable = True, cfg = "exec"),
    },
)

def _update_config_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".json")
    args = ["-source", ctx.attr.source, "-poll-interval", ctx.attr.poll_interval, "-health-timeout", ctx.attr.health_timeout, "-reboot-window", ctx.attr.reboot_window, "-public-key", ctx.file.public_key.path, "-out", out.path]
    ctx.actions.run(
        executable = ctx.executable._updateconfig,
        arguments = args,
        inputs = [ctx.file.public_key],
        outputs = [out],
        mnemonic = "UpdateConfig",
    )
    return [DefaultInfo(files = depset([out]))]

update_config = rule(
    implementation = _update_config_impl,
    doc = """The updater's configuration (`<name>.json`, core/updater/config), which
appliance_root's `update` places in the system; the build fails on one the
appliance would refuse.""",
    attrs = {
        "health_timeout": attr.string(default = "5m", doc = "How long after boot a new system has to be healthy before it is rolled back."),
        "poll_interval": attr.string(default = "1m", doc = "How often the source is checked."),
        "public_key": attr.label(allow_single_file = True, mandatory = True, doc = "The Ed25519 public key (PEM) payloads must be signed with; checked here."),
        "reboot_window": attr.string(default = "", doc = "\"HH:MM-HH:MM\" (UTC) to reboot into an installed update in; empty: at once."),
        "source": attr.string(mandatory = True, doc = "An http(s):// base URL, or an absolute directory on the appliance, holding a payload's files."),
        "_updateconfig": attr.label(default = Label("//build/update/cmd/updateconfig"), executable = True, cfg = "exec"),
    },
)
