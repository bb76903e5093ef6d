// Command hello is the program of the image that build/oci/tests/tarball
// writes as a docker-save tarball: it prints a greeting and exits 0, so a
// pod running it proves the image from the tarball was preseeded and
// started without a pull. It must stay free of cgo and of any dependency on
// the image's filesystem (the image holds only this binary).
package main

import (
	"fmt"
	"os"
)

// Greeting is what a test looks for in the pod's log.
const Greeting = "Hello world from an image tarball"

func main() {
	if _, err := fmt.Println(Greeting); err != nil {
		os.Exit(1)
	}
}
