"""Public entry point of the kernel module rules: load them from here."""

load(":kernel_modules.bzl", _kernel_modules = "kernel_modules")

kernel_modules = _kernel_modules
