"""system_image, uki and disk_image: the appliance's system image, its Unified Kernel Image and its GPT disk image."""

load("//third_party/erofs-utils:mkfs_erofs.bzl", "mkfs_erofs_args", "mkfs_erofs_attrs")

SystemImageInfo = provider(
    doc = "A system image (core/systemimage): the image and its info.",
    fields = {
        "image": "File: the EROFS image with its dm-verity hash tree appended.",
        "info": "File: its root hash, hash offset and size (JSON).",
    },
)

# The kernel command line every appliance boots with: the console on the
# first serial port, and a panic ends the machine rather than hanging it.
BASE_CMDLINE = "console=ttyS0 panic=-1"

# FAT's epoch (1980-01-01): every time stamp of the ESP.
_SOURCE_DATE_EPOCH = "315532800"

def _system_image_impl(ctx):
    image = ctx.actions.declare_file(ctx.label.name + ".img")
    info = ctx.actions.declare_file(ctx.label.name + ".json")
    args = ctx.actions.args()
    args.add("-tree", ctx.file.tree)
    args.add("-out", image)
    args.add("-info", info)
    tools = mkfs_erofs_args(ctx, args)

    # mkfs_erofs_args names its flags as bundletool does (--mkfs_erofs);
    # Go's flag package takes both one and two dashes.
    ctx.actions.run(
        executable = ctx.executable._mksystem,
        arguments = [args],
        inputs = [ctx.file.tree],
        tools = tools,
        outputs = [image, info],
        mnemonic = "SystemImage",
        progress_message = "Writing the system image %{label}",
    )
    return [
        DefaultInfo(files = depset([image])),
        OutputGroupInfo(info = depset([info])),
        SystemImageInfo(image = image, info = info),
    ]

system_image = rule(
    implementation = _system_image_impl,
    doc = """The appliance's system image (`<name>.img`, core/systemimage): the
root tree as an EROFS image, made by the pinned mkfs.erofs, with its
dm-verity hash tree appended; output group `info`: `<name>.json`, its root
hash, hash offset and size. The same tree gives the same bytes.""",
    attrs = {
        "tree": attr.label(allow_single_file = [".tar"], mandatory = True, doc = "The root tree: an initramfs with format = \"tar\"."),
        "_mksystem": attr.label(
            default = Label("//build/appliance/cmd/mksystem"),
            executable = True,
            cfg = "exec",
        ),
    } | mkfs_erofs_attrs(),
)

def _os_release_impl(ctx):
    version = ctx.attr.version
    for part in version.split("."):
        if not part.isdigit() or (len(part) > 1 and part[0] == "0") or len(part) > 9:
            fail("os_release %s: version %r: want dot-separated decimal numbers without leading zeros, e.g. 1.4.2 (core/updatepayload)" % (ctx.label, version))
    out = ctx.actions.declare_file(ctx.label.name + ".os-release")
    fields = {
        "ID": "appliance",
        "IMAGE_ID": "appliance",
        "IMAGE_VERSION": version,
        "NAME": "Appliance",
        "PRETTY_NAME": "Appliance " + version,
    }
    ctx.actions.write(out, "".join(['{}="{}"\n'.format(k, v) for k, v in sorted(fields.items())]))
    return [DefaultInfo(files = depset([out]))]

os_release = rule(
    implementation = _os_release_impl,
    doc = """The appliance's os-release (`<name>.os-release`): the system's
/etc/os-release, which the updater reads its running version from, and the
UKI's .osrel section, by whose IMAGE_VERSION systemd-boot orders the boot
entries.""",
    attrs = {
        "version": attr.string(mandatory = True, doc = "The release's version: dot-separated decimal numbers (core/updatepayload.ValidVersion)."),
    },
)

def _uki_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".efi")
    osrel = ctx.file.os_release
    args = ctx.actions.args()
    args.add("-stub", ctx.file.stub)
    args.add("-kernel", ctx.file.kernel)
    args.add("-initrd", ctx.file.initramfs)
    args.add("-osrel", osrel)
    args.add("-cmdline", " ".join([BASE_CMDLINE] + ctx.attr.cmdline))
    args.add("-out", out)
    info = ctx.attr.system[SystemImageInfo].info
    args.add("-system-info", info)
    inputs = [ctx.file.stub, ctx.file.kernel, ctx.file.initramfs, osrel, info]
    ctx.actions.run(
        executable = ctx.executable._mkuki,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        mnemonic = "Uki",
        progress_message = "Assembling the UKI %{label}",
    )
    return [DefaultInfo(files = depset([out]))]

uki = rule(
    implementation = _uki_impl,
    doc = """A Unified Kernel Image (`<name>.efi`): systemd's UEFI stub with the
kernel, the initramfs, the kernel command line and an os-release as PE
sections (build/appliance/uki). systemd-boot finds it in the ESP's
/EFI/Linux (core/disklayout).""",
    attrs = {
        "cmdline": attr.string_list(doc = "Kernel arguments after the base ones (console, panic)."),
        "initramfs": attr.label(allow_single_file = True, mandatory = True, doc = "The initramfs (cpio, compressed or not)."),
        "kernel": attr.label(allow_single_file = True, mandatory = True, doc = "The kernel: an EFI-stub bzImage."),
        "os_release": attr.label(
            allow_single_file = True,
            mandatory = True,
            doc = "The .osrel section: an os_release, whose IMAGE_VERSION names the UKI's boot entry and orders it.",
        ),
        "stub": attr.label(
            allow_single_file = True,
            default = Label("//third_party/uefi:linux_efi_stub"),
            doc = "The UEFI stub: systemd's linuxx64.efi.stub, pinned.",
        ),
        "system": attr.label(
            providers = [SystemImageInfo],
            mandatory = True,
            doc = "The system_image whose root hash and hash offset end the command line (core/systemimage): init boots only from a system partition.",
        ),
        "_mkuki": attr.label(
            default = Label("//build/appliance/cmd/mkuki"),
            executable = True,
            cfg = "exec",
        ),
    },
)

def _disk_image_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".raw")
    layout = ctx.actions.declare_file(ctx.label.name + ".layout.json")
    args = ctx.actions.args()
    args.add("-uki", ctx.file.uki)
    args.add("-loader", ctx.file.loader)
    args.add("-out", out)
    args.add("-layout", layout)
    system = ctx.attr.system[SystemImageInfo]
    args.add("-system", system.image)
    args.add("-system-info", system.info)
    inputs = [ctx.file.uki, ctx.file.loader, system.image, system.info]
    if ctx.attr.system_size_mib:
        args.add("-system-size", ctx.attr.system_size_mib * 1024 * 1024)
    if ctx.attr.esp_size_mib:
        args.add("-esp-size", ctx.attr.esp_size_mib * 1024 * 1024)
    ctx.actions.run(
        executable = ctx.executable._mkdisk,
        arguments = [args],
        inputs = inputs,
        outputs = [out, layout],
        env = {"SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH},
        mnemonic = "DiskImage",
        progress_message = "Writing the disk image %{label}",
    )
    return [
        DefaultInfo(files = depset([out])),
        OutputGroupInfo(layout = depset([layout])),
    ]

disk_image = rule(
    implementation = _disk_image_impl,
    doc = """The appliance's disk image (`<name>.raw`), in core/disklayout's layout:
a GPT with the EFI system partition holding systemd-boot at
/EFI/BOOT/BOOTX64.EFI, its loader.conf and `uki` as the committed boot
entry of its version (/EFI/Linux/appliance-<IMAGE_VERSION>.efi), and the
two system slots, slot A holding `system`. Output group `layout`: `<name>.layout.json`, the
partitions with their GUIDs, offsets and sizes. The same inputs give the
same bytes: GUIDs derive from the contents, FAT time stamps are FAT's epoch
and its volume serial 0.""",
    attrs = {
        "esp_size_mib": attr.int(doc = "The ESP's size in MiB; 0 fits two UKIs (for A/B) with room to spare."),
        "loader": attr.label(
            allow_single_file = [".efi"],
            default = Label("//third_party/uefi:systemd_boot"),
            doc = "The boot loader: systemd-boot, pinned.",
        ),
        "system": attr.label(
            providers = [SystemImageInfo],
            mandatory = True,
            doc = "The system_image for slot A, whose partition GUID its root hash gives; the uki's `system` must be the same.",
        ),
        "system_size_mib": attr.int(doc = "Each system slot's size in MiB; 0 gives `system`'s size and a quarter more, for the next release to grow in."),
        "uki": attr.label(allow_single_file = [".efi"], mandatory = True, doc = "The Unified Kernel Image (a `uki`)."),
        "_mkdisk": attr.label(
            default = Label("//build/appliance/cmd/mkdisk"),
            executable = True,
            cfg = "exec",
        ),
    },
)
