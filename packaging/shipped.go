package packaging

import (
	"fmt"
	"os"
	"path/filepath"
)

// ShippedFiles returns the files the .deb/.rpm packages install from this
// package, by base name: both units (ggagent.service rendered for
// AgentBinary with DefaultAgentArguments) and both /etc/default files.
// The packaging build writes them with WriteShippedFiles so nfpm ships
// exactly the bytes `ggagent install` would write.
func ShippedFiles() (map[string]string, error) {
	agent, err := RenderAgentUnit(AgentBinary, DefaultAgentArguments())
	if err != nil {
		return nil, err
	}
	return map[string]string{
		AgentUnitName:     agent,
		FleetUnitName:     FleetUnit,
		"ggagent.default": AgentDefaults,
		"ggfleet.default": FleetDefaults,
	}, nil
}

// WriteShippedFiles writes ShippedFiles into dir (created if missing), 0644.
func WriteShippedFiles(dir string) error {
	files, err := ShippedFiles()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write packaged files: %w", err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write packaged file %s: %w", name, err)
		}
	}
	return nil
}
