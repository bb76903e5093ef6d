package main

import (
	"testing"

	"github.com/appliance-bundler/appliance/core/kubelet"
)

// The E2E kubelet's config is the production one; only the command line
// can turn it off.
func TestVariantKubeletE2E(t *testing.T) {
	c := kubelet.Config{}
	if !variantKubelet(&c, "console=ttyS0 panic=-1") {
		t.Error("variantKubelet turned the kubelet off without appliance.e2e.kubelet=off")
	}
	if c != (kubelet.Config{}) {
		t.Errorf("variantKubelet changed the config to %+v", c)
	}
	if variantKubelet(&c, "console=ttyS0 appliance.e2e.kubelet=off panic=-1") {
		t.Error("variantKubelet runs the kubelet with appliance.e2e.kubelet=off")
	}
}
