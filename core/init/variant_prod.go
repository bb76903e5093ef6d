package main

import (
	"github.com/appliance-bundler/appliance/core/kubelet"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// variantRunnables of the production variant: none. It has no debug or test
// endpoint at all; the E2E variant (variant_e2e.go) adds its own.
func variantRunnables() map[string]supervisor.Runnable { return nil }

// variantKubelet of the production variant changes nothing, whatever the
// command line: the kubelet always runs, on loopback only, with its
// read-only port off.
func variantKubelet(*kubelet.Config, string) bool { return true }
