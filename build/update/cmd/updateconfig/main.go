// Command updateconfig writes the updater's configuration
// (core/updater/config) from its flags, refusing one the appliance would
// refuse at boot.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater/config"
)

func main() {
	var c config.Config
	var poll, health time.Duration
	flag.StringVar(&c.Source, "source", "", "http(s):// base URL or absolute directory of the payloads")
	flag.DurationVar(&poll, "poll-interval", time.Minute, "how often the source is checked")
	flag.DurationVar(&health, "health-timeout", 5*time.Minute, "how long after boot a new system has to be healthy")
	flag.StringVar(&c.RebootWindow, "reboot-window", "", "HH:MM-HH:MM (UTC), or empty to reboot at once")
	key := flag.String("public-key", "", "the public key payloads are signed with (PEM)")
	out := flag.String("out", "", "where to write the configuration (JSON)")
	flag.Parse()
	c.PollInterval, c.HealthTimeout = config.Duration(poll), config.Duration(health)
	if err := run(c, *key, *out); err != nil {
		fmt.Fprintln(os.Stderr, "updateconfig:", err)
		os.Exit(1)
	}
}

func run(c config.Config, key, out string) error {
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := os.ReadFile(key)
	if err != nil {
		return err
	}
	if _, err := updatepayload.ParsePublicKey(b); err != nil {
		return fmt.Errorf("the public key %s: %w", key, err)
	}
	j, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, append(j, '\n'), 0o644)
}
