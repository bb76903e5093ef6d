package staticpod

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationPrivilegeReason on a pod says why its containers need the
// privileges Privileges lists; with it, they are built without a warning.
const AnnotationPrivilegeReason = "appliance-bundler.dev/privilege-reason"

// Privileges lists what the pod asks for beyond what a workload normally
// needs, one entry per container and privilege: a privileged container,
// added capabilities, or an unconfined seccomp profile (of the pod or of
// a container). A pod is the appliance's own: it starts at every boot,
// with no admission control in front of it.
func Privileges(pod *corev1.Pod) []string {
	var out []string
	if sp := pod.Spec.SecurityContext; sp != nil && unconfined(sp.SeccompProfile) {
		out = append(out, "the pod's seccomp profile is Unconfined")
	}
	for _, c := range containers(pod) {
		sc := c.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			out = append(out, fmt.Sprintf("container %q is privileged", c.Name))
		}
		if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			caps := make([]string, len(sc.Capabilities.Add))
			for i, cp := range sc.Capabilities.Add {
				caps[i] = string(cp)
			}
			out = append(out, fmt.Sprintf("container %q adds capabilities %s", c.Name, strings.Join(caps, ", ")))
		}
		if unconfined(sc.SeccompProfile) {
			out = append(out, fmt.Sprintf("container %q has an Unconfined seccomp profile", c.Name))
		}
	}
	return out
}

func unconfined(p *corev1.SeccompProfile) bool {
	return p != nil && p.Type == corev1.SeccompProfileTypeUnconfined
}

// CheckPrivileges returns an error naming file and each privilege the pod
// asks for without a reason (AnnotationPrivilegeReason); nil when it asks
// for none, or says why.
func CheckPrivileges(file string, pod *corev1.Pod) error {
	p := Privileges(pod)
	if len(p) == 0 || strings.TrimSpace(pod.Annotations[AnnotationPrivilegeReason]) != "" {
		return nil
	}
	return fmt.Errorf("pod manifest %s: %s, and the pod gives no reason (annotation %s)", file, strings.Join(p, "; "), AnnotationPrivilegeReason)
}
