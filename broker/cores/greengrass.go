package cores

import (
	"context"
	"sync"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Greengrass reads what the cloud's Greengrass service knows about a core
// beyond its registration (the aws provider): spec §7's installed
// components and effective deployments. Both return errkind.NotFound for a
// core Greengrass does not know.
type Greengrass interface {
	ListInstalledComponents(ctx context.Context, core string) ([]cdf.InstalledComponent, error)
	ListEffectiveDeployments(ctx context.Context, core string) ([]cdf.EffectiveDeployment, error)
}

// greengrassDevice fills dev from Greengrass as CDF does (spec §7): status,
// coreVersion, platform, architecture, lastStatusUpdateTimestamp and tags
// from GetCoreDevice; installedComponents and effectiveDeployments from the
// two list calls, made together. Every lookup is optional: a failed one
// leaves its fields as they are (status UNKNOWN, empty lists) and is
// logged. A core Greengrass does not know costs one call, not three: it
// has nothing to list.
func (s *Service) greengrassDevice(ctx context.Context, name string, dev *cdf.Device) {
	cd, err := s.cfg.Provider.GetCoreDevice(ctx, name)
	switch {
	case errkind.Is(err, errkind.NotFound):
		s.log.Debug("core is not registered with Greengrass; device status UNKNOWN", "core", name)
		return
	case err != nil:
		s.log.Warn("get core device failed; showing status UNKNOWN", "core", name, "err", err)
	default:
		dev.Status = cd.Status
		if dev.Status == "" {
			dev.Status = "UNKNOWN"
		}
		dev.CoreVersion, dev.Platform, dev.Architecture = cd.CoreVersion, cd.Platform, cd.Architecture
		dev.LastStatusUpdateTimestamp = cdf.TimePtr(cd.LastStatus)
		dev.Tags = cd.Tags
	}
	var (
		wg        sync.WaitGroup
		installed []cdf.InstalledComponent
		effective []cdf.EffectiveDeployment
		iErr      error
		eErr      error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		installed, iErr = s.cfg.Greengrass.ListInstalledComponents(ctx, name)
	}()
	go func() {
		defer wg.Done()
		effective, eErr = s.cfg.Greengrass.ListEffectiveDeployments(ctx, name)
	}()
	wg.Wait()
	if iErr != nil {
		s.log.Warn("list installed components failed; showing none", "core", name, "err", iErr)
	} else if installed != nil {
		dev.InstalledComponents = installed
	}
	if eErr != nil {
		s.log.Warn("list effective deployments failed; showing none", "core", name, "err", eErr)
	} else if effective != nil {
		dev.EffectiveDeployments = effective
	}
}
