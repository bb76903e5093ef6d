package staticpod_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/pods/staticpod"
)

const privilegedPod = `apiVersion: v1
kind: Pod
metadata:
  name: demo
%s
spec:
  securityContext:
    seccompProfile:
      type: Unconfined
  containers:
  - name: web
    image: web:2.0
    securityContext:
      privileged: true
      capabilities:
        add: ["NET_ADMIN", "SYS_TIME"]
        drop: ["ALL"]
  - name: quiet
    image: web:2.0
    securityContext:
      capabilities:
        drop: ["ALL"]
`

// Each privilege is named, and only those.
func TestPrivilegesNamesEach(t *testing.T) {
	pod, err := staticpod.Parse("pod.yaml", []byte(strings.Replace(privilegedPod, "%s", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"the pod's seccomp profile is Unconfined",
		`container "web" is privileged`,
		`container "web" adds capabilities NET_ADMIN, SYS_TIME`,
	}
	if got := staticpod.Privileges(pod); !slices.Equal(got, want) {
		t.Errorf("Privileges = %q, want %q", got, want)
	}
}

// Without a reason, a privileged pod builds with a warning naming the file
// and each privilege, or fails under StrictPrivileges; with a reason it
// builds quietly either way.
func TestBuildWarnsOrRefusesUnjustifiedPrivileges(t *testing.T) {
	f := newFixture(t)
	bare := writePod(t, strings.Replace(privilegedPod, "%s", "", 1))
	justified := writePod(t, strings.Replace(privilegedPod, "%s",
		"  annotations:\n    "+staticpod.AnnotationPrivilegeReason+": sets the clock and routes for the appliance", 1))

	var warned []error
	warn := func(err error) { warned = append(warned, err) }
	if _, _, err := staticpod.Build(bare, "demo", f.bundles, staticpod.Options{Warn: warn}); err != nil {
		t.Fatalf("without strict: %v", err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0].Error(), bare) || !strings.Contains(warned[0].Error(), `container "web" is privileged`) {
		t.Errorf("warnings = %v, want one naming %s and the privileged container", warned, bare)
	}
	_, _, err := staticpod.Build(bare, "demo", f.bundles, staticpod.Options{StrictPrivileges: true, Warn: warn})
	if err == nil || !strings.Contains(err.Error(), staticpod.AnnotationPrivilegeReason) {
		t.Errorf("strict: err = %v, want a refusal naming the annotation", err)
	}

	warned = nil
	for _, strict := range []bool{false, true} {
		if _, _, err := staticpod.Build(justified, "demo", f.bundles, staticpod.Options{StrictPrivileges: strict, Warn: warn}); err != nil {
			t.Errorf("justified, strict %v: %v", strict, err)
		}
	}
	if len(warned) != 0 {
		t.Errorf("justified pod warned: %v", errors.Join(warned...))
	}
}
