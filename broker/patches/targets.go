package patches

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

var (
	deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9_.:@=-]{1,128}$`)
	coreNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)
)

// Probe statuses.
const (
	ProbeRequested = "requested"
	ProbeOK        = "ok"
	ProbeFailed    = "failed"
)

// CheckDeviceID validates a client device id as it appears in MQTT topics.
func CheckDeviceID(id string) error {
	if !deviceIDRE.MatchString(id) {
		return invalid("deviceId %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9 and _ . : @ = -", id)
	}
	return nil
}

// secretKeys are JSON keys that would carry a secret; a target body that
// has one is refused so a secret is never stored by mistake.
var secretKeys = map[string]bool{
	"password": true, "passphrase": true, "privatekey": true, "secret": true, "key": true, "token": true,
}

// CheckNoSecrets refuses a target body that carries a secret anywhere.
func CheckNoSecrets(body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil // the decoder reports malformed JSON
	}
	if path := findSecret(v, ""); path != "" {
		return invalid("%s looks like a secret: secrets are never stored in the broker. Store it on the core with `ggagent credentials set NAME` and give credentialRef \"core:NAME\"", path)
	}
	return nil
}

func findSecret(v any, at string) string {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			p := k
			if at != "" {
				p = at + "." + k
			}
			if secretKeys[strings.ToLower(k)] {
				return p
			}
			if found := findSecret(sub, p); found != "" {
				return found
			}
		}
	case []any:
		for i, sub := range x {
			if found := findSecret(sub, fmt.Sprintf("%s[%d]", at, i)); found != "" {
				return found
			}
		}
	}
	return ""
}

// PutTarget creates or replaces a device's target profile.
func (s *Service) PutTarget(ctx context.Context, deviceID string, in patchmsg.Target) (Target, error) {
	if err := CheckDeviceID(deviceID); err != nil {
		return Target{}, err
	}
	if in.DeviceID != "" && in.DeviceID != deviceID {
		return Target{}, invalid("deviceId %q in the body differs from %q in the path", in.DeviceID, deviceID)
	}
	in.DeviceID = deviceID
	if err := in.Validate(); err != nil {
		return Target{}, invalid("target %q is not valid: %s", deviceID, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if !coreNameRE.MatchString(in.CoreName) {
		return Target{}, invalid("coreName %q is not a thing name: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", in.CoreName)
	}
	now := cdf.At(s.now())
	t := Target{Target: in, CreatedAt: now, UpdatedAt: now}
	if old, err := s.cfg.Store.GetPatchTarget(ctx, deviceID); err == nil {
		t.CreatedAt = old.CreatedAt
		if old.CoreName == in.CoreName && old.Connection.Type == in.Connection.Type {
			t.LastProbe = old.LastProbe
		}
	} else if !errkind.Is(err, errkind.NotFound) {
		return Target{}, err
	}
	if err := s.cfg.Store.PutPatchTarget(ctx, t); err != nil {
		return Target{}, fmt.Errorf("store target %q: %w", deviceID, err)
	}
	return t, nil
}

// GetTarget returns a device's target profile.
func (s *Service) GetTarget(ctx context.Context, deviceID string) (Target, error) {
	return s.cfg.Store.GetPatchTarget(ctx, deviceID)
}

// ListTargets lists target profiles by device id, optionally of one core.
func (s *Service) ListTargets(ctx context.Context, core string, count int, after string) ([]Target, bool, error) {
	return s.cfg.Store.ListPatchTargets(ctx, core, count, after)
}

// DeleteTarget deletes a device's target profile; errkind.NotFound if none.
func (s *Service) DeleteTarget(ctx context.Context, deviceID string) error {
	return s.cfg.Store.DeletePatchTarget(ctx, deviceID)
}

// ProbeTarget asks the device's core to connect, log in and run uname -a;
// the result arrives later (HandleProbeResult) and shows as lastProbe.
func (s *Service) ProbeTarget(ctx context.Context, deviceID string) (Probe, error) {
	t, err := s.cfg.Store.GetPatchTarget(ctx, deviceID)
	if err != nil {
		return Probe{}, err
	}
	if s.cfg.Publisher == nil {
		return Probe{}, errkind.New(errkind.Unavailable, "this broker cannot reach cores (no MQTT)")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := Probe{ProbeID: hex.EncodeToString(b[:]), Status: ProbeRequested, RequestedAt: cdf.At(s.now())}
	if err := s.cfg.Store.SetPatchTargetProbe(ctx, deviceID, p); err != nil {
		return Probe{}, err
	}
	payload, err := json.Marshal(patchmsg.ProbeRequest{Version: patchmsg.Version, ProbeID: p.ProbeID, DeviceID: deviceID, Target: t.Target})
	if err != nil {
		return Probe{}, fmt.Errorf("encode probe of %q: %w", deviceID, err)
	}
	if err := s.cfg.Publisher.Publish(ctx, t.CoreName, patchmsg.ProbeTopic(deviceID), payload, false); err != nil {
		return Probe{}, errkind.Wrap(errkind.Unavailable, err, "could not send the probe to core %s: %v", t.CoreName, err)
	}
	return p, nil
}

// HandleProbeResult stores a probe result core sent for deviceID; results
// of other probes, or from a core the target does not name, are ignored.
func (s *Service) HandleProbeResult(ctx context.Context, core, deviceID string, r patchmsg.ProbeResult) error {
	t, err := s.cfg.Store.GetPatchTarget(ctx, deviceID)
	if err != nil {
		return err
	}
	if t.CoreName != core {
		s.log.Warn("probe result from a core the target does not name: ignored", "thing", core, "device", deviceID, "targetCore", t.CoreName)
		return nil
	}
	if t.LastProbe == nil || t.LastProbe.ProbeID != r.ProbeID {
		s.log.Info("result of an older probe: ignored", "thing", core, "device", deviceID, "probeId", r.ProbeID)
		return nil
	}
	p := *t.LastProbe
	at := cdf.At(s.now())
	p.ReceivedAt = &at
	p.OK, p.Uname, p.HostKeyFingerprint, p.Error = r.OK, r.Uname, r.HostKeyFingerprint, r.Error
	p.Status = ProbeFailed
	if r.OK {
		p.Status = ProbeOK
	}
	return s.cfg.Store.SetPatchTargetProbe(ctx, deviceID, p)
}
