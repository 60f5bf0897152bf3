// Package packaging holds the files ggfleet ships to hosts — the systemd
// units and their /etc/default files — embedded once, so that
// `ggagent install` (through kardianos/service) and the .deb/.rpm packages
// install the same bytes.
//
// ggagent.service is a kardianos/service v1.3.0 template (its small
// engine, not text/template): the installer passes AgentUnit as the
// "SystemdScript" option and kardianos fills in the program path and its
// arguments. Packages, which know both in advance, call RenderAgentUnit.
// ggfleet.service is a plain unit.
//
// Imported by the installer (ggagent) and by packaging tools; it imports
// only the standard library.
package packaging

import (
	_ "embed"
	"errors"
	"strings"
)

// Unit and defaults file names, and where they are installed.
const (
	AgentUnitName = "ggagent.service"
	FleetUnitName = "ggfleet.service"
	// AgentDefaultsPath and FleetDefaultsPath are the EnvironmentFile= of the units.
	AgentDefaultsPath = "/etc/default/ggagent"
	FleetDefaultsPath = "/etc/default/ggfleet"
	// AgentBinary is where packages put ggagent.
	AgentBinary = "/usr/bin/ggagent"
	// AgentStateDir is the unit's StateDirectory= (also ggagent's default --state-dir).
	AgentStateDir = "/var/lib/ggagent"
)

// AgentUnit is packaging/systemd/ggagent.service: a kardianos/service
// SystemdScript template using {{Path}} and {{Arguments}}.
//
//go:embed systemd/ggagent.service
var AgentUnit string

// FleetUnit is packaging/systemd/ggfleet.service, ready to install as it is.
//
//go:embed systemd/ggfleet.service
var FleetUnit string

// AgentDefaults is packaging/systemd/ggagent.default, installed as /etc/default/ggagent.
//
//go:embed systemd/ggagent.default
var AgentDefaults string

// FleetDefaults is packaging/systemd/ggfleet.default, installed as /etc/default/ggfleet.
//
//go:embed systemd/ggfleet.default
var FleetDefaults string

// execStartTemplate is the only template action in AgentUnit, written as
// kardianos/service's own systemd template writes ExecStart.
const execStartTemplate = "{{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}"

// DefaultAgentArguments are the arguments the packages give `ggagent`.
func DefaultAgentArguments() []string {
	return []string{"run", "--state-dir", AgentStateDir, "--runtime", "greengrass"}
}

// RenderAgentUnit renders AgentUnit for the program at path run with args,
// producing exactly what kardianos/service v1.3.0 writes for
// service.Config{Executable: path, Arguments: args}: the path with spaces
// escaped as \x20 (its cmdEscape) and each argument double-quoted with
// inner quotes backslash-escaped (its cmd).
func RenderAgentUnit(path string, args []string) (string, error) {
	if path == "" || !strings.HasPrefix(path, "/") {
		return "", errors.New("render ggagent.service: the program path must be absolute")
	}
	if strings.Count(AgentUnit, "{{") != strings.Count(execStartTemplate, "{{") || !strings.Contains(AgentUnit, execStartTemplate) {
		return "", errors.New("render ggagent.service: the unit's template actions changed; update RenderAgentUnit to match")
	}
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(path, " ", `\x20`))
	for _, a := range args {
		b.WriteString(` "` + strings.ReplaceAll(a, `"`, `\"`) + `"`)
	}
	return strings.Replace(AgentUnit, execStartTemplate, b.String(), 1), nil
}
