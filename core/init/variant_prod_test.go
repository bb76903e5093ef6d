package main

import (
	"testing"

	"github.com/appliance-bundler/appliance/core/kubelet"
)

// The production kubelet cannot be turned off from the command line.
func TestVariantKubeletProduction(t *testing.T) {
	c := kubelet.Config{}
	if !variantKubelet(&c, "appliance.e2e.kubelet=off") {
		t.Error("the production variant let the command line turn the kubelet off")
	}
	if c != (kubelet.Config{}) {
		t.Errorf("variantKubelet changed the production config to %+v", c)
	}
}
