"""Public entry point of the initramfs rules: load them from here."""

load(":initramfs.bzl", _initramfs = "initramfs")

initramfs = _initramfs
