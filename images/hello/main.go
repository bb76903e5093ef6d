// Command hello is the smallest preseeded image's program: it prints a
// greeting and exits 0, so a pod running it proves the preseeded image was
// found and started without a pull. It must stay free of cgo and of any
// dependency on the image's filesystem (the image holds only this binary).
package main

import (
	"fmt"
	"os"
)

// Greeting is what the end-to-end test looks for in the pod's log.
const Greeting = "Hello world from preseeded image"

func main() {
	if _, err := fmt.Println(Greeting); err != nil {
		os.Exit(1)
	}
}
