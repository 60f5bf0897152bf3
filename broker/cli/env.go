package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// applyEnv fills every flag that was not set on the command line from the
// environment variable named after it: --mqtt-listen ↔ GGFLEET_MQTT_LISTEN.
// Repeatable flags take a comma-separated list.
func applyEnv(fs *pflag.FlagSet, prefix string) error {
	var firstErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		name := prefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			firstErr = fmt.Errorf("environment variable %s: %w", name, err)
		}
	})
	return firstErr
}
