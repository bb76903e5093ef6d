//go:build appliance_e2e

package main

import (
	"testing"

	"github.com/appliance-bundler/appliance/core/kubelet"
)

// The E2E kubelet differs only in its read-only port.
func TestVariantKubeletE2E(t *testing.T) {
	c := kubelet.Config{}
	variantKubelet(&c)
	if c != (kubelet.Config{ReadOnlyPort: 10255}) {
		t.Errorf("variantKubelet = %+v, want only ReadOnlyPort 10255", c)
	}
}
