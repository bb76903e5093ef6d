package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/appliance-bundler/appliance/core/atomicfile"
	"github.com/appliance-bundler/appliance/core/node"
)

// machineIDPath is where the kubelet (and anything systemd-minded) reads
// the machine's identity, through /etc/machine-id; it fails its node info
// without it.
const machineIDPath = node.MachineID

// validMachineID is machine-id(5)'s format: 32 lowercase hex digits.
func validMachineID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// ensureMachineID writes the machine ID to path (machineIDPath). The image cannot carry one (every
// appliance would share it), so it is made at first boot: kept on the state
// disk when there is one (persist is its directory), so the identity lasts
// across reboots, else new on every boot. It returns the ID.
func ensureMachineID(path, persist string) (string, error) {
	var kept string
	if persist != "" {
		kept = filepath.Join(persist, "machine-id")
		if b, err := os.ReadFile(kept); err == nil && validMachineID(strings.TrimSpace(string(b))) {
			id := strings.TrimSpace(string(b))
			return id, writeMachineID(path, id)
		}
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("failed to make a machine ID: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if kept != "" {
		if err := writeMachineID(kept, id); err != nil {
			return "", err
		}
	}
	return id, writeMachineID(path, id)
}

// writeMachineID writes id to path, whole or not at all.
func writeMachineID(path, id string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create the directory of %s: %w", path, err)
	}
	return atomicfile.Write(path, []byte(id+"\n"), 0o444)
}
