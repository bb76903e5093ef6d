"""Public entry point of the release rules: load them from here."""

load(":release.bzl", _release_archive = "release_archive")

release_archive = _release_archive
