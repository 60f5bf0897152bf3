package installer

import (
	"github.com/kardianos/service"
)

// Service is the part of kardianos/service's service.Service the installer
// uses. Tests pass a fake through Env.NewService so no real service is
// ever installed on the test host.
type Service interface {
	// Platform names the init system kardianos/service detected, e.g.
	// "linux-systemd" or "unix-systemv".
	Platform() string
	Install() error
	Uninstall() error
	Start() error
	Stop() error
	Status() (service.Status, error)
}

// PlatformSystemd is the only Platform the installer accepts: on any other
// kardianos/service would write a SysV init script instead of our unit.
const PlatformSystemd = "linux-systemd"

// NewKardianosService is the production Env.NewService.
func NewKardianosService(cfg service.Config) (Service, error) {
	return service.New(noProgram{}, &cfg)
}

// noProgram satisfies service.Interface; the installer only installs and
// controls the service, it never runs inside it (`ggagent run` does).
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
