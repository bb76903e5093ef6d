"""mkfs.erofs and what it needs to run, as the paths they take in the appliance.

The files come from the Debian packages pinned by erofs-utils.lock.json (see
BUILD.bazel for why and how to update them). appliance_root adds both
dicts to the root; //third_party/erofs-utils:mkfs_erofs_test lays out
the very same files and runs them, so a library missing here fails that test.
"""

# The Debian multiarch directory, which the loader searches by default: the
# appliance has no ld.so.cache.
_LIBDIR = "/usr/lib/x86_64-linux-gnu/"

# Mode 0755: the binary, and the ELF interpreter the kernel loads for it.
MKFS_EROFS_EXECUTABLES = {
    Label("@erofs_utils//:mkfs.erofs"): "/usr/bin/mkfs.erofs",
    Label("@erofs_utils_libc6//:ld-linux-x86-64.so.2"): "/lib64/ld-linux-x86-64.so.2",
}

# Mode 0644: every shared library mkfs.erofs links, directly or not, and
# the one glibc loads at run time, under its soname.
MKFS_EROFS_LIBRARIES = {
    Label("@erofs_utils_libbrotli1//:libbrotlicommon.so.1"): _LIBDIR + "libbrotlicommon.so.1",
    Label("@erofs_utils_libbrotli1//:libbrotlidec.so.1"): _LIBDIR + "libbrotlidec.so.1",
    Label("@erofs_utils_libc6//:libc.so.6"): _LIBDIR + "libc.so.6",
    Label("@erofs_utils_libcom_err2//:libcom_err.so.2"): _LIBDIR + "libcom_err.so.2",
    Label("@erofs_utils_libssl3t64//:libcrypto.so.3"): _LIBDIR + "libcrypto.so.3",
    Label("@erofs_utils_libcurl4t64//:libcurl.so.4"): _LIBDIR + "libcurl.so.4",
    Label("@erofs_utils_libdeflate0//:libdeflate.so.0"): _LIBDIR + "libdeflate.so.0",
    # Not linked: glibc loads it for pthread_exit, which mkfs.erofs's
    # worker threads call (found by mkfs_erofs_test's chrooted run).
    Label("@erofs_utils_libgcc_s1//:libgcc_s.so.1"): _LIBDIR + "libgcc_s.so.1",
    Label("@erofs_utils_libgssapi_krb5_2//:libgssapi_krb5.so.2"): _LIBDIR + "libgssapi_krb5.so.2",
    Label("@erofs_utils_libidn2_0//:libidn2.so.0"): _LIBDIR + "libidn2.so.0",
    Label("@erofs_utils_libjson_c5//:libjson-c.so.5"): _LIBDIR + "libjson-c.so.5",
    Label("@erofs_utils_libk5crypto3//:libk5crypto.so.3"): _LIBDIR + "libk5crypto.so.3",
    Label("@erofs_utils_libkeyutils1//:libkeyutils.so.1"): _LIBDIR + "libkeyutils.so.1",
    Label("@erofs_utils_libkrb5_3//:libkrb5.so.3"): _LIBDIR + "libkrb5.so.3",
    Label("@erofs_utils_libkrb5support0//:libkrb5support.so.0"): _LIBDIR + "libkrb5support.so.0",
    Label("@erofs_utils_libldap2//:liblber.so.2"): _LIBDIR + "liblber.so.2",
    Label("@erofs_utils_libldap2//:libldap.so.2"): _LIBDIR + "libldap.so.2",
    Label("@erofs_utils_liblz4_1//:liblz4.so.1"): _LIBDIR + "liblz4.so.1",
    Label("@erofs_utils_liblzma5//:liblzma.so.5"): _LIBDIR + "liblzma.so.5",
    Label("@erofs_utils_libc6//:libm.so.6"): _LIBDIR + "libm.so.6",
    Label("@erofs_utils_libnghttp2_14//:libnghttp2.so.14"): _LIBDIR + "libnghttp2.so.14",
    Label("@erofs_utils_libnghttp3_9//:libnghttp3.so.9"): _LIBDIR + "libnghttp3.so.9",
    Label("@erofs_utils_libngtcp2_16//:libngtcp2.so.16"): _LIBDIR + "libngtcp2.so.16",
    Label("@erofs_utils_libngtcp2_crypto_ossl0//:libngtcp2_crypto_ossl.so.0"): _LIBDIR + "libngtcp2_crypto_ossl.so.0",
    Label("@erofs_utils_libpcre2_8_0//:libpcre2-8.so.0"): _LIBDIR + "libpcre2-8.so.0",
    Label("@erofs_utils_libpsl5t64//:libpsl.so.5"): _LIBDIR + "libpsl.so.5",
    Label("@erofs_utils_libc6//:libresolv.so.2"): _LIBDIR + "libresolv.so.2",
    Label("@erofs_utils_libsasl2_2//:libsasl2.so.2"): _LIBDIR + "libsasl2.so.2",
    Label("@erofs_utils_libselinux1//:libselinux.so.1"): _LIBDIR + "libselinux.so.1",
    Label("@erofs_utils_libssh2_1t64//:libssh2.so.1"): _LIBDIR + "libssh2.so.1",
    Label("@erofs_utils_libssl3t64//:libssl.so.3"): _LIBDIR + "libssl.so.3",
    Label("@erofs_utils_libunistring5//:libunistring.so.5"): _LIBDIR + "libunistring.so.5",
    Label("@erofs_utils_libuuid1//:libuuid.so.1"): _LIBDIR + "libuuid.so.1",
    Label("@erofs_utils_libxml2_16//:libxml2.so.16"): _LIBDIR + "libxml2.so.16",
    Label("@erofs_utils_libxxhash0//:libxxhash.so.0"): _LIBDIR + "libxxhash.so.0",
    Label("@erofs_utils_zlib1g//:libz.so.1"): _LIBDIR + "libz.so.1",
    Label("@erofs_utils_libzstd1//:libzstd.so.1"): _LIBDIR + "libzstd.so.1",
}

# The pinned mkfs.erofs as a build tool: preseed_tree converts layers with it
# (bundletool tree --mkfs_erofs ...), and the erofs tests do, so the blobs the
# build makes come from the binary the appliance ships.
MKFS_EROFS_TOOL = {
    "binary": Label("@erofs_utils//:mkfs.erofs"),
    "loader": Label("@erofs_utils_libc6//:ld-linux-x86-64.so.2"),
    # label -> soname
    "libraries": {label: path.rpartition("/")[2] for label, path in MKFS_EROFS_LIBRARIES.items()},
}

def mkfs_erofs_attrs():
    """The private attributes a rule needs to run the pinned mkfs.erofs.

    Returns:
      A dict of attribute name to attr: _mkfs_erofs, _mkfs_loader, _mkfs_libs.
    """
    return {
        "_mkfs_erofs": attr.label(
            default = MKFS_EROFS_TOOL["binary"],
            allow_single_file = True,
            cfg = "exec",
            doc = "The pinned mkfs.erofs.",
        ),
        "_mkfs_libs": attr.label_keyed_string_dict(
            default = MKFS_EROFS_TOOL["libraries"],
            allow_files = True,
            cfg = "exec",
            doc = "Its shared libraries, each to its soname.",
        ),
        "_mkfs_loader": attr.label(
            default = MKFS_EROFS_TOOL["loader"],
            allow_single_file = True,
            cfg = "exec",
            doc = "The ELF interpreter it was built for.",
        ),
    }

def mkfs_erofs_args(ctx, args):
    """Adds bundletool's --mkfs_* flags for the attributes of mkfs_erofs_attrs.

    Args:
      ctx: the rule's context.
      args: the Args of the action.

    Returns:
      The files the action must take as tool inputs.
    """
    args.add("--mkfs_erofs", ctx.file._mkfs_erofs)
    args.add("--mkfs_loader", ctx.file._mkfs_loader)
    files = [ctx.file._mkfs_erofs, ctx.file._mkfs_loader]
    for target, soname in ctx.attr._mkfs_libs.items():
        f = target.files.to_list()
        if len(f) != 1:
            fail("library %s of mkfs.erofs is %d files, want 1" % (target.label, len(f)))
        args.add("--mkfs_lib", "%s=%s" % (soname, f[0].path))
        files.append(f[0])
    return files

def mkfs_erofs_test_env():
    """data and env of a go_test that runs the pinned mkfs.erofs.

    The test reads MKFS_EROFS, MKFS_LOADER and MKFS_LIBS (space-separated
    soname=rlocationpath) and passes them to build/oci/erofs.Mkfs.

    Returns:
      A struct with data (a list of labels) and env (a dict).
    """
    libs = MKFS_EROFS_TOOL["libraries"]
    return struct(
        data = [MKFS_EROFS_TOOL["binary"], MKFS_EROFS_TOOL["loader"]] + list(libs.keys()),
        env = {
            "MKFS_EROFS": "$(rlocationpath %s)" % MKFS_EROFS_TOOL["binary"],
            "MKFS_LIBS": " ".join(["%s=$(rlocationpath %s)" % (soname, label) for label, soname in libs.items()]),
            "MKFS_LOADER": "$(rlocationpath %s)" % MKFS_EROFS_TOOL["loader"],
        },
    )
