"""Public entry point of the pod rules: load them from here."""

load(":static_pod.bzl", _static_pod = "static_pod")
load(":static_pods.bzl", _static_pods = "static_pods")

static_pod = _static_pod
static_pods = _static_pods
