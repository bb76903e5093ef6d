package main

import (
	"testing"

	"github.com/appliance-bundler/appliance/core/kubelet"
)

// The E2E kubelet differs only in its read-only port.
func TestVariantKubeletE2E(t *testing.T) {
	c := kubelet.Config{}
	if !variantKubelet(&c, "console=ttyS0 panic=-1") {
		t.Error("variantKubelet turned the kubelet off without appliance.e2e.kubelet=off")
	}
	if c != (kubelet.Config{ReadOnlyPort: 10255}) {
		t.Errorf("variantKubelet = %+v, want only ReadOnlyPort 10255", c)
	}
	if variantKubelet(&c, "console=ttyS0 appliance.e2e.kubelet=off panic=-1") {
		t.Error("variantKubelet runs the kubelet with appliance.e2e.kubelet=off")
	}
}
