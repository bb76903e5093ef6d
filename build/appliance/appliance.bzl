"""appliance_root: the appliance's root with a given init, as a tar; appliance_disk: its disk image; appliance_with_bundles: both with a set of bundles."""

load("//build/initramfs:defs.bzl", "initramfs")
load("//build/oci:bundle_format.bzl", "PRESEED_MANIFEST_PATH")
load("//build/oci:defs.bzl", "preseed_tree")
load("//build/pods:defs.bzl", "static_pods")
load("//build/update:defs.bzl", "update_config")
load("//third_party/e2fsprogs:mke2fs.bzl", "MKE2FS_EXECUTABLES", "MKE2FS_LIBRARIES")
load("//third_party/erofs-utils:mkfs_erofs.bzl", "MKFS_EROFS_EXECUTABLES", "MKFS_EROFS_LIBRARIES")
load(":disk.bzl", "disk_image", "os_release", "system_image", "uki")
load(":node.bzl", "ETC_LINKS", "STATIC_POD_DIR")

def appliance_root(name, init, version = "0", update = None, preseed_tar = None, preseed_manifest = None, pods = None, testonly = False, **kwargs):
    """The appliance's root tree as a tar (`<name>.tar`), for its system image: init, containerd, runc, CNI, the kubelet, mkfs.erofs, mke2fs, kernel modules, the preseeded bundles with their manifest, the static pods, its os-release and its updater's configuration.

    Declares `<name>_os_release` (the os-release of `version`, which
    appliance_disk's UKI takes too) and, with `update`, `<name>_update`
    (an update_config).

    With neither `preseed_tar`, `preseed_manifest` nor `pods`, the root
    holds the production bundles (//images:preseed) and pods (//images:pods).
    Otherwise it declares `<name>_pods`, a static_pods of `pods` checked
    against `preseed_manifest`, so that every appliance's pods are checked
    against the bundles that very appliance preseeds.

    Args:
      name: the target's name.
      init: the init binary (`//core/init` or its E2E variant).
      version: the release's version, dot-separated numbers ("1.4.2"): the
        updater takes only newer ones.
      update: the updater's settings, a dict of update_config's attributes
        (`source`, `public_key`, and optionally `poll_interval`,
        `health_timeout`, `reboot_window`); None: no updater.
      preseed_tar: the tree of bundles (a preseed_tree's tar); tests swap it.
        Default: //images:preseed.tar.
      preseed_manifest: that tree's manifest, which preseed enforces.
        Default: //images:preseed.json.
      pods: static_pod targets to place at /etc/kubernetes/manifests/.
        Default: the production pods with the production tree, none with
        another tree.
      testonly: whether the targets are testonly.
      **kwargs: passed to initramfs (visibility, tags, ...).
    """
    if (preseed_tar == None) != (preseed_manifest == None):
        fail("appliance_root %s: give both preseed_tar and preseed_manifest, or neither" % name)
    if preseed_tar == None and pods == None:
        pods_tar = Label("//images:pods")
    else:
        static_pods(
            name = name + "_pods",
            pods = pods or [],
            preseed_manifest = preseed_manifest or Label("//images:preseed.json"),
            testonly = testonly,
        )
        pods_tar = ":" + name + "_pods"
    os_release(
        name = name + "_os_release",
        version = version,
        testonly = testonly,
        visibility = kwargs.get("visibility"),
    )
    update_files = {}
    if update:
        update_config(
            name = name + "_update",
            testonly = testonly,
            **update
        )
        update_files = {
            ":" + name + "_update": "/etc/appliance/update.json",
            update["public_key"]: "/etc/appliance/update.pem",
        }
    initramfs(
        name = name,
        compression = "none",
        format = "tar",
        # STATIC_POD_DIR: the kubelet's staticPodPath, there even
        # when no pod is.
        dirs = ["/etc", STATIC_POD_DIR, "/proc", "/run", "/sys", "/tmp", "/var"],
        # It also holds mkfs.erofs, its loader and its libraries, for
        # containerd's EROFS differ: it converts the layers that are not in
        # the build-time cache (third_party/erofs-utils); and mke2fs, which
        # formats the data partition at first boot (third_party/e2fsprogs).
        executables = {
            Label("//third_party/cni:bridge"): "/opt/cni/bin/bridge",
            Label("//third_party/cni:host-local"): "/opt/cni/bin/host-local",
            Label("//third_party/cni:loopback"): "/opt/cni/bin/loopback",
            Label("//third_party/containerd:containerd"): "/usr/bin/containerd",
            Label("//third_party/containerd:containerd-shim-runc-v2"): "/usr/bin/containerd-shim-runc-v2",
            Label("//third_party/kubernetes:kubelet"): "/usr/bin/kubelet",
            Label("//third_party/runc:runc"): "/usr/bin/runc",
            init: "/init",
        } | MKFS_EROFS_EXECUTABLES | MKE2FS_EXECUTABLES,
        files = {
            Label("//images/appliance:10-pods.conflist"): "/etc/cni/net.d/10-pods.conflist",
            # root only. The kubelet reads them (user namespace mappings)
            # and fails to start without them.
            Label("//images/appliance:group"): "/etc/group",
            Label("//images/appliance:passwd"): "/etc/passwd",
            # The manifest of the preseeded bundles, which preseed enforces
            # (core/init sets preseed.Config.Manifest to this path).
            preseed_manifest or Label("//images:preseed.json"): PRESEED_MANIFEST_PATH,
            # The running version, which the updater reads.
            ":" + name + "_os_release": "/etc/os-release",
        } | update_files | MKFS_EROFS_LIBRARIES | MKE2FS_LIBRARIES,
        tars = [
            # /containerd/preseed/<namespace>/<name>.tar: the preseeded images.
            preseed_tar or Label("//images:preseed.tar"),
            # /etc/kubernetes/manifests/<pod>.yaml: the static pods.
            pods_tar,
            # /lib/modules/<release>/ and /etc/modules-load.d/.
            Label("//third_party/linux:modules"),
        ],
        # /etc's files that the node writes at boot, on tmpfs.
        symlinks = ETC_LINKS,
        testonly = testonly,
        **kwargs
    )

def appliance_disk(name, init, root, testonly = False, **kwargs):
    """The appliance's disk image: `<name>_system`, `<name>_early`, `<name>_uki` and `<name>`.

    The system image `<name>_system` is `root` (an appliance_root) as EROFS
    under dm-verity, in slot A. The UKI `<name>_uki` boots the kernel with
    `<name>_early`, an initramfs of `init` and the modules it needs to open
    the system (block device, device mapper, dm-verity, EROFS), the
    system's root hash on its command line, and root's os-release (whose
    version names its boot entry).

    Args:
      name: the disk image target's name.
      init: the init binary: the same as `root`'s.
      root: an appliance_root in this package (":<name>"), whose
        `<root>_os_release` the UKI takes.
      testonly: whether the targets are testonly.
      **kwargs: passed to the disk_image (visibility, tags, ...); visibility
        and tags also to the system image and the UKI.
    """
    system_image(
        name = name + "_system",
        tree = root,
        testonly = testonly,
        tags = kwargs.get("tags"),
        visibility = kwargs.get("visibility"),
    )
    initramfs(
        name = name + "_early",
        dirs = ["/dev", "/proc", "/sys"],
        executables = {init: "/init"},
        tars = [Label("//third_party/linux:early_modules")],
        testonly = testonly,
        visibility = ["//visibility:private"],
    )
    uki(
        name = name + "_uki",
        kernel = Label("//third_party/linux:vmlinuz"),
        initramfs = ":" + name + "_early",
        os_release = root + "_os_release",
        system = ":" + name + "_system",
        testonly = testonly,
        tags = kwargs.get("tags"),
        visibility = kwargs.get("visibility"),
    )
    disk_image(
        name = name,
        uki = ":" + name + "_uki",
        system = ":" + name + "_system",
        testonly = testonly,
        **kwargs
    )

def appliance_with_bundles(name, init, bundles, pods = [], version = "0", update = None, testonly = False, **kwargs):
    """An appliance root with its own set of preseed bundles and pods, and its disk.

    Declares `<name>_tree` (a preseed_tree of `bundles`, whose tar and
    manifest are `<name>_tree.tar` and `<name>_tree.json`), `<name>_pods` (`pods`
    checked against that manifest; output group `pods_json` lists them),
    the root `<name>` that carries them and its disk image `<name>_disk`.
    Variants of the appliance (E2E trees with extra images) use it instead
    of repeating those targets.

    Args:
      name: the root target's name.
      init: the init binary (`//core/init` or its E2E variant).
      bundles: preseed_bundle targets.
      pods: static_pod targets; the build fails if one runs an image that
        `bundles` do not provide.
      version: the release's version (appliance_root).
      update: the updater's settings (appliance_root).
      testonly: whether the targets are testonly (needed when a bundle is).
      **kwargs: passed to the root and the disk (visibility, tags, ...); tags
        also to the tree.
    """
    preseed_tree(
        name = name + "_tree",
        bundles = bundles,
        testonly = testonly,
        tags = kwargs.get("tags"),
    )
    appliance_root(
        name = name,
        init = init,
        preseed_manifest = ":" + name + "_tree.json",
        preseed_tar = ":" + name + "_tree.tar",
        pods = pods,
        version = version,
        update = update,
        testonly = testonly,
        **kwargs
    )
    appliance_disk(
        name = name + "_disk",
        init = init,
        root = ":" + name,
        testonly = testonly,
        **kwargs
    )
