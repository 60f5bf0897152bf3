// Package health ingests what core agents say over MQTT (health reports,
// connection state, any other message as a sign of life) and turns it into
// the device block of GET /cores/{name}: Greengrass's status, installed
// components and effective deployments, plus ggfleet's connectivity and
// lastSeenAt (DESIGN.md, MQTT contract).
//
// Every message costs one UPSERT of the core's single row: this is the hot
// path of thousands of agents. Health reports that arrive together are
// stored by group commit (groupcommit.go) when the Store is a BatchStore:
// many UPSERTs, one transaction, and still each report acknowledged only
// once it is committed; signs of life likewise when it is a TouchStore.
// Connectivity is computed when it is read, from the stored connection
// state, the last-seen time and the reported interval (a lease), so no
// sweeper has to run: nothing happens when a lease runs out except that the
// next read says OFFLINE, and reads are rare next to writes.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/groupcommit"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Lease rules: a core is ONLINE while its connection is up and it was heard
// from within LeaseFactor × its reported interval (DefaultInterval when it
// reported none).
const (
	DefaultInterval = 30 * time.Second
	LeaseFactor     = 3
	// MaxClockSkew is how far in the future a report's timestamp may be;
	// later ones are taken as received now, so one bad clock cannot make the
	// core's later reports look out of date.
	MaxClockSkew = 5 * time.Minute
)

// StatusUnknown is device.status before any health report (spec §7).
const StatusUnknown = "UNKNOWN"

// Report is a core's health report as stored: the MQTT message with the
// authenticated core name and the time it arrived.
type Report struct {
	Core                 string
	Status               string // HEALTHY | UNHEALTHY
	NucleusState         string
	NucleusVersion       string
	Components           []mqttmsg.ComponentState
	EffectiveDeployments []mqttmsg.EffectiveDeployment
	Platform             string
	Architecture         string
	AgentVersion         string
	UptimeSeconds        int64
	IntervalSeconds      int
	System               mqttmsg.SystemStats
	CertificateNotAfter  time.Time
	ReportedAt           time.Time // the agent's timestamp (ordering key)
	ReceivedAt           time.Time
}

// Record is what is stored about a core: its latest report (zero, with
// Status "", before the first one) and its connection.
type Record struct {
	Report
	Connection string    // mqttmsg.Online | mqttmsg.Offline
	LastSeenAt time.Time // when the core last sent anything
}

// Store keeps one row per core. Every method returns errkind.NotFound when
// no core record of that name exists (health rows live and die with cores).
type Store interface {
	// PutReport stores r as its core's latest report, marks the core ONLINE
	// and seen at r.ReceivedAt, in one statement. If a report with a later
	// ReportedAt is already stored it changes nothing and returns
	// stored=false. sync is true when the status, nucleus version, platform
	// or architecture differ from what MarkRegistrySynced last confirmed.
	PutReport(ctx context.Context, r Report) (stored, sync bool, err error)
	// MarkRegistrySynced records that the registry holds r's status fields,
	// if the stored row still has them.
	MarkRegistrySynced(ctx context.Context, r Report) error
	// SetConnection sets the connection state; a non-zero seen moves
	// last-seen forward (never back).
	SetConnection(ctx context.Context, core, state string, seen time.Time) error
	// GetHealth returns the core's row, errkind.NotFound when there is none
	// (the core never spoke or does not exist).
	GetHealth(ctx context.Context, core string) (Record, error)
}

// Registry is the provider's Greengrass registration, which the local
// provider keeps itself: a health report or a connection means the core is
// registered. *local.Provider satisfies it.
type Registry interface {
	UpdateCoreStatus(ctx context.Context, c provider.CoreDevice) error
	MarkCoreRegistered(ctx context.Context, name string) error
}

// Config holds the Service's dependencies.
type Config struct {
	Store Store
	// Registry is told about reports and connections; leave it nil (a nil
	// interface, not a typed nil) when the cloud keeps the registration.
	Registry Registry
	Logger   *slog.Logger
	Now      func() time.Time
}

// Service ingests agent messages and serves the device view of cores.
type Service struct {
	cfg     Config
	log     *slog.Logger
	group   *groupcommit.Group[Report, PutResult] // nil unless Store is a BatchStore
	touches *groupcommit.Group[touch, error]      // nil unless Store is a TouchStore
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	if bs, ok := cfg.Store.(BatchStore); ok {
		s.group = newGroupCommit(bs, MaxBatch)
	}
	if ts, ok := cfg.Store.(TouchStore); ok {
		s.touches = newTouchCommit(ts, MaxBatch)
	}
	return s
}

// HandleHealth stores a health report from thing, the authenticated client
// (a different m.ThingName is logged and ignored). A report older than the
// stored one (out-of-order delivery) only counts as a sign of life.
// errkind.NotFound when thing is not a known core.
func (s *Service) HandleHealth(ctx context.Context, thing string, m mqttmsg.HealthMsg) error {
	if m.ThingName != "" && m.ThingName != thing {
		s.log.Warn("health report names another thing; using the authenticated name", "thing", thing, "thingName", m.ThingName)
	}
	now := s.cfg.Now().UTC()
	r := Report{
		Core:                 thing,
		Status:               m.Status,
		NucleusState:         m.Nucleus.State,
		NucleusVersion:       m.Nucleus.Version,
		Components:           m.Components,
		EffectiveDeployments: m.EffectiveDeployments,
		Platform:             m.Platform,
		Architecture:         m.Architecture,
		AgentVersion:         m.AgentVersion,
		UptimeSeconds:        m.UptimeSeconds,
		IntervalSeconds:      m.IntervalSeconds,
		System:               m.System,
		CertificateNotAfter:  m.CertificateNotAfter,
		ReportedAt:           m.Timestamp.UTC(),
		ReceivedAt:           now,
	}
	if r.ReportedAt.IsZero() || r.ReportedAt.After(now.Add(MaxClockSkew)) {
		r.ReportedAt = now
	}
	stored, sync, err := s.putReport(ctx, r)
	if err != nil {
		return fmt.Errorf("store health report of %q: %w", thing, err)
	}
	if !stored {
		s.log.Debug("health report older than the stored one; counted as a sign of life only", "thing", thing, "timestamp", r.ReportedAt)
		if err := s.cfg.Store.SetConnection(ctx, thing, mqttmsg.Online, now); err != nil {
			return fmt.Errorf("record that %q was seen: %w", thing, err)
		}
		return nil
	}
	if sync && s.cfg.Registry != nil {
		err := s.cfg.Registry.UpdateCoreStatus(ctx, provider.CoreDevice{
			Name: thing, Status: r.Status, CoreVersion: r.NucleusVersion,
			Platform: r.Platform, Architecture: r.Architecture, LastStatus: r.ReportedAt,
		})
		if err != nil {
			// The report is stored; the next one retries the registry.
			return fmt.Errorf("register status of core %q: %w", thing, err)
		}
		if err := s.cfg.Store.MarkRegistrySynced(ctx, r); err != nil {
			return fmt.Errorf("record registry sync of %q: %w", thing, err)
		}
	}
	return nil
}

// putReport stores r by group commit when the Store can, alone otherwise;
// either way it returns once r is committed (the MQTT acknowledgement
// waits for HandleHealth).
func (s *Service) putReport(ctx context.Context, r Report) (stored, sync bool, err error) {
	if s.group == nil {
		return s.cfg.Store.PutReport(ctx, r)
	}
	res, err := s.group.Put(ctx, r)
	if err != nil {
		return false, false, fmt.Errorf("health report: %w", err)
	}
	return res.Stored, res.Sync, res.Err
}

// HandleConnection records the retained connection message (or the last
// will). ONLINE also registers the core with the Registry.
func (s *Service) HandleConnection(ctx context.Context, thing string, m mqttmsg.ConnectionMsg) error {
	switch m.State {
	case mqttmsg.Online:
		if err := s.cfg.Store.SetConnection(ctx, thing, mqttmsg.Online, s.cfg.Now().UTC()); err != nil {
			return fmt.Errorf("record %q online: %w", thing, err)
		}
		if s.cfg.Registry != nil {
			if err := s.cfg.Registry.MarkCoreRegistered(ctx, thing); err != nil {
				return fmt.Errorf("register core %q: %w", thing, err)
			}
		}
		return nil
	case mqttmsg.Offline:
		return s.offline(ctx, thing)
	}
	return errkind.New(errkind.Invalid, "connection state of %q must be %s or %s, got %q", thing, mqttmsg.Online, mqttmsg.Offline, m.State)
}

// HandleDisconnect marks thing OFFLINE at once, when its MQTT session ends.
func (s *Service) HandleDisconnect(ctx context.Context, thing string) error {
	return s.offline(ctx, thing)
}

func (s *Service) offline(ctx context.Context, thing string) error {
	if err := s.cfg.Store.SetConnection(ctx, thing, mqttmsg.Offline, time.Time{}); err != nil {
		return fmt.Errorf("record %q offline: %w", thing, err)
	}
	return nil
}

// Touch records that thing sent some other message: it is connected and
// seen now (by group commit when the Store is a TouchStore). Failures are
// logged, not returned (the message is handled elsewhere); things that are
// not cores are ignored.
func (s *Service) Touch(ctx context.Context, thing string) {
	now := s.cfg.Now().UTC()
	var err error
	if s.touches != nil {
		var res error
		res, err = s.touches.Put(ctx, touch{core: thing, at: now})
		if err == nil {
			err = res
		}
	} else {
		err = s.cfg.Store.SetConnection(ctx, thing, mqttmsg.Online, now)
	}
	switch {
	case errkind.Is(err, errkind.NotFound):
		s.log.Debug("message from a thing that is not a core", "thing", thing)
	case err != nil:
		s.log.Warn("could not record that a core was seen", "thing", thing, "err", err)
	}
}

// online applies the lease to a stored record at time now.
func online(rec Record, now time.Time) bool {
	if rec.Connection != mqttmsg.Online || rec.LastSeenAt.IsZero() {
		return false
	}
	interval := time.Duration(rec.IntervalSeconds) * time.Second
	if interval <= 0 {
		interval = DefaultInterval
	}
	return now.Sub(rec.LastSeenAt) <= LeaseFactor*interval
}

// Presence reports whether core is ONLINE now and when it was last seen
// (zero when never, or on a store error, which is logged). It fits
// cores.PresenceFunc.
func (s *Service) Presence(ctx context.Context, core string) (bool, time.Time) {
	rec, err := s.cfg.Store.GetHealth(ctx, core)
	if err != nil {
		if !errkind.Is(err, errkind.NotFound) {
			s.log.Warn("could not read core presence; showing it OFFLINE", "core", core, "err", err)
		}
		return false, time.Time{}
	}
	return online(rec, s.cfg.Now()), rec.LastSeenAt
}

// Device returns the device block of core (spec §7 and DESIGN.md). ok is
// false when the core has never sent a health report: the block then says
// status UNKNOWN, with connectivity and lastSeenAt from any connection
// message, and callers may prefer the provider's view of the status.
func (s *Service) Device(ctx context.Context, core string) (cdf.Device, bool, error) {
	dev := cdf.Device{
		InstalledComponents:  []cdf.InstalledComponent{},
		EffectiveDeployments: []cdf.EffectiveDeployment{},
		Status:               StatusUnknown,
		Connectivity:         mqttmsg.Offline,
	}
	rec, err := s.cfg.Store.GetHealth(ctx, core)
	if errkind.Is(err, errkind.NotFound) {
		return dev, false, nil
	}
	if err != nil {
		return dev, false, fmt.Errorf("read health of core %q: %w", core, err)
	}
	if online(rec, s.cfg.Now()) {
		dev.Connectivity = mqttmsg.Online
	}
	dev.LastSeenAt = cdf.TimePtr(rec.LastSeenAt)
	if rec.Status == "" {
		return dev, false, nil
	}
	dev.Status = rec.Status
	dev.CoreVersion = rec.NucleusVersion
	dev.Platform = rec.Platform
	dev.Architecture = rec.Architecture
	dev.LastStatusUpdateTimestamp = cdf.TimePtr(rec.ReportedAt)
	for _, c := range rec.Components {
		dev.InstalledComponents = append(dev.InstalledComponents, cdf.InstalledComponent{Name: c.Name, Version: c.Version})
	}
	for _, d := range rec.EffectiveDeployments {
		dev.EffectiveDeployments = append(dev.EffectiveDeployments, cdf.EffectiveDeployment{
			DeploymentID:              d.DeploymentID,
			DeploymentName:            deploymentName(d),
			CoreDeviceExecutionStatus: d.Status,
		})
	}
	return dev, true, nil
}

// deploymentName is "<templateName> v<version>", or "" for a deployment
// ggfleet did not make.
func deploymentName(d mqttmsg.EffectiveDeployment) string {
	if d.TemplateName == "" {
		return ""
	}
	return d.TemplateName + " v" + strconv.Itoa(d.TemplateVersion)
}
