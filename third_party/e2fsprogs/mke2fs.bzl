"""mke2fs and the libraries it needs beyond mkfs.erofs's, as the paths they take in the appliance."""

# The Debian multiarch directory, which the loader searches by default.
_LIBDIR = "/usr/lib/x86_64-linux-gnu/"

# Mode 0755.
MKE2FS_EXECUTABLES = {
    Label("@e2fsprogs//:mke2fs"): "/usr/sbin/mke2fs",
}

# Mode 0644: libext2fs, libe2p and libblkid; libc, libcom_err and libuuid
# come with mkfs.erofs (//third_party/erofs-utils:mkfs_erofs.bzl).
MKE2FS_LIBRARIES = {
    Label("@e2fsprogs_libblkid1//:libblkid.so.1"): _LIBDIR + "libblkid.so.1",
    Label("@e2fsprogs_libext2fs2t64//:libe2p.so.2"): _LIBDIR + "libe2p.so.2",
    Label("@e2fsprogs_libext2fs2t64//:libext2fs.so.2"): _LIBDIR + "libext2fs.so.2",
}
