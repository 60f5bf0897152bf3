package installer

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/packaging"
	"github.com/kardianos/service"
)

// ErrNotSystemd is wrapped when the host is not booted with systemd.
var ErrNotSystemd = errors.New("systemd is not running")

// ---- preflight ----

func preflightStep() Step {
	return Step{
		Name:  "preflight",
		Title: "preflight checks (root, systemd, disk, Java, clock)",
		Describe: func(e *Env) string {
			s := "check: running as root; systemd is PID 1 (/run/systemd/system); ≥256 MiB free for the state directory"
			if e.Options.Runtime == RuntimeGreengrass {
				s += " and " + e.Options.GreengrassRoot + "; Java 8 or later (java -version)"
			}
			return s + "; the clock is after 2025-01-01"
		},
		Done: func(context.Context, *Env) (bool, error) { return false, nil },
		Run: func(ctx context.Context, e *Env) error {
			if probs := preflightProblems(ctx, e); len(probs) > 0 {
				return errors.New(strings.Join(probs, "\n"))
			}
			return e.openStateDir()
		},
	}
}

// preflightProblems runs every check and returns what is wrong; it changes nothing.
func preflightProblems(ctx context.Context, e *Env) []string {
	var probs []string
	o := e.Options
	if e.Root == "" && e.Euid() != 0 {
		probs = append(probs, "not running as root: ggagent install creates users, installs the nucleus and a system service; run it with sudo")
	}
	if !o.NoService {
		if _, err := os.Stat(e.host("/run/systemd/system")); err != nil {
			probs = append(probs, fmt.Sprintf("%v: this system was not booted with systemd (no /run/systemd/system), and the ggagent service needs a systemd-booted system; boot with systemd, or install with --no-service and start `ggagent run` yourself", ErrNotSystemd))
		}
	}
	paths := []string{o.StateDir}
	if o.Runtime == RuntimeGreengrass {
		paths = append(paths, e.host(o.GreengrassRoot))
	}
	for _, p := range paths {
		at := existingAncestor(p)
		free, err := e.FreeBytes(at)
		if err != nil {
			probs = append(probs, fmt.Sprintf("cannot read the free space at %s: %v", at, err))
			continue
		}
		if free < MinFreeBytes {
			probs = append(probs, fmt.Sprintf("disk full: %s has %d MiB free, at least %d MiB are needed for %s; free some space", at, free>>20, MinFreeBytes>>20, p))
		}
	}
	if o.Runtime == RuntimeGreengrass {
		if err := checkJava(ctx, e); err != nil {
			probs = append(probs, err.Error())
		}
	}
	if now := e.Now(); now.Before(minClock) {
		probs = append(probs, fmt.Sprintf("the clock says %s, before 2025-01-01: certificates cannot be checked; set the time (timedatectl set-ntp true, or date -s)", now.UTC().Format(time.RFC3339)))
	}
	return probs
}

// existingAncestor is p or its nearest existing parent.
func existingAncestor(p string) string {
	for {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

const javaMissing = "Java 8 or later is required for the greengrass runtime: install openjdk-17-jre-headless, or use --runtime simulated"

var javaVersionRE = regexp.MustCompile(`version "(\d+)(?:\.(\d+))?`)

// checkJava runs `java -version` and wants Java 8 or later.
func checkJava(ctx context.Context, e *Env) error {
	out, err := e.Commander.Run(ctx, "java", "-version")
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s (no java in PATH)", javaMissing)
	}
	if err != nil {
		return fmt.Errorf("%s (java -version failed: %v)", javaMissing, err)
	}
	m := javaVersionRE.FindStringSubmatch(string(out))
	if m == nil {
		return fmt.Errorf("%s (cannot read the version in %q)", javaMissing, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	if major == 1 && m[2] != "" {
		major, _ = strconv.Atoi(m[2]) // 1.8 → 8
	}
	if major < 8 {
		return fmt.Errorf("%s (found Java %d)", javaMissing, major)
	}
	return nil
}

// ---- enroll (token way) ----

func enrollStep() Step {
	return Step{
		Name:  "enroll",
		Title: "enroll with the broker",
		Describe: func(e *Env) string {
			return fmt.Sprintf("enroll core %q with %s using the one-time token (a key is generated here; an existing identity for this core is reused without spending the token) into %s",
				e.Options.Core, e.Options.BrokerURL, e.Options.StateDir)
		},
		Done: func(_ context.Context, e *Env) (bool, error) {
			id, ok := loadIdentity(e)
			return ok && id.ThingName == e.Options.Core, nil
		},
		Run: func(ctx context.Context, e *Env) error {
			if err := e.openStateDir(); err != nil {
				return err
			}
			_, err := identity.Enroll(ctx, identity.EnrollOptions{
				BrokerURL: e.Options.BrokerURL, Core: e.Options.Core, Token: e.Options.Token,
				CASHA256: e.Options.CASHA256, KeyAlgorithm: e.Options.KeyAlgorithm,
				Dir: e.dir, Logger: e.Logger, HTTPClient: e.HTTPClient,
				UserAgent: "ggagent/" + version.Version, Now: e.Now,
			})
			return err
		},
	}
}

// loadIdentity is the enrolled identity, if any; it changes nothing.
func loadIdentity(e *Env) (identity.Identity, bool) {
	dir := e.dir
	if dir == nil {
		d, err := statedir.OpenExisting(e.Options.StateDir)
		if err != nil {
			return identity.Identity{}, false
		}
		dir = d
	}
	id, err := identity.Load(dir)
	return id, err == nil
}

// ---- nucleus zip ----

func nucleusZipStep() Step {
	return Step{
		Name:  "nucleus-zip",
		Title: "obtain the Greengrass nucleus",
		Describe: func(e *Env) string {
			s := "copy"
			if isURL(e.Options.NucleusZip) {
				s = "download"
			}
			sum := "print its SHA-256"
			if e.Options.NucleusSHA256 != "" {
				sum = "verify SHA-256 " + e.Options.NucleusSHA256
			}
			return fmt.Sprintf("%s %s, %s, unzip it into %s", s, e.Options.NucleusZip, sum, filepath.Join(e.Options.StateDir, NucleusWorkDir))
		},
		Done: func(_ context.Context, e *Env) (bool, error) {
			if nucleusInstalled(e) {
				return true, nil // no need for the zip any more
			}
			_, err := os.Stat(greengrassJar(e))
			return err == nil && e.rec.Steps["nucleus-zip"] != (time.Time{}), nil
		},
		Run: func(ctx context.Context, e *Env) error {
			if err := e.openStateDir(); err != nil {
				return err
			}
			data, err := readNucleusZip(ctx, e)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			got := hex.EncodeToString(sum[:])
			if want := strings.ToLower(e.Options.NucleusSHA256); want != "" && got != want {
				return fmt.Errorf("the nucleus zip %s has SHA-256 %s, not the expected %s: download it again, or check --nucleus-sha256", e.Options.NucleusZip, got, want)
			}
			if e.Options.NucleusSHA256 == "" {
				fmt.Fprintf(e.Out, "(SHA-256 %s, not verified: pass --nucleus-sha256) ", got)
			}
			work := e.dir.File(NucleusWorkDir)
			if err := os.RemoveAll(work); err != nil {
				return err
			}
			if err := e.markAdded(func(a *Added) { a.NucleusWorkDir = true }); err != nil {
				return err
			}
			if err := unzip(data, work); err != nil {
				return fmt.Errorf("unzip the nucleus %s: %w", e.Options.NucleusZip, err)
			}
			if _, err := os.Stat(greengrassJar(e)); err != nil {
				return fmt.Errorf("the nucleus zip %s has no lib/Greengrass.jar: is it greengrass-nucleus-latest.zip?", e.Options.NucleusZip)
			}
			return nil
		},
		Undo: func(_ context.Context, e *Env) error {
			if !e.rec.Added.NucleusWorkDir {
				return nil
			}
			if err := os.RemoveAll(e.dir.File(NucleusWorkDir)); err != nil {
				return err
			}
			e.rec.Added.NucleusWorkDir = false
			return nil
		},
	}
}

func greengrassJar(e *Env) string {
	return filepath.Join(e.Options.StateDir, NucleusWorkDir, "lib", "Greengrass.jar")
}

const maxNucleusZip = 512 << 20

func readNucleusZip(ctx context.Context, e *Env) ([]byte, error) {
	src := e.Options.NucleusZip
	if !isURL(src) {
		f, err := os.Open(src)
		if err != nil {
			return nil, fmt.Errorf("read the nucleus zip: %w", err)
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, maxNucleusZip))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, fmt.Errorf("download the nucleus zip: %w", err)
	}
	resp, err := e.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download the nucleus zip from %s: %w (check the URL and this device's network)", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download the nucleus zip from %s: %s", src, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxNucleusZip))
}

// unzip extracts data into dir, refusing entries that leave it.
func unzip(data []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, f := range zr.File {
		p := filepath.Join(root, f.Name)
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			return fmt.Errorf("entry %q leaves the archive's directory", f.Name)
		}
		if f.FileInfo().IsDir() {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := extract(f, p); err != nil {
			return err
		}
	}
	return nil
}

func extract(f *zip.File, p string) error {
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	mode := os.FileMode(0o644)
	if f.Mode()&0o111 != 0 {
		mode = 0o755
	}
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// ---- user and group ----

func userStep() Step {
	return Step{
		Name:  "user",
		Title: "create user " + ComponentUser + ":" + ComponentGroup,
		Describe: func(*Env) string {
			return "groupadd --system " + ComponentGroup + " and useradd --system -g " + ComponentGroup + " " + ComponentUser + " (each only if getent does not find it); Greengrass components run as this user"
		},
		Done: func(ctx context.Context, e *Env) (bool, error) {
			g, err := exists(ctx, e, "group", ComponentGroup)
			if err != nil || !g {
				return false, err
			}
			return exists(ctx, e, "passwd", ComponentUser)
		},
		Run: func(ctx context.Context, e *Env) error {
			if ok, err := exists(ctx, e, "group", ComponentGroup); err != nil {
				return err
			} else if !ok {
				if _, err := e.Commander.Run(ctx, "groupadd", "--system", ComponentGroup); err != nil {
					return fmt.Errorf("create group %s: %w", ComponentGroup, err)
				}
				if err := e.markAdded(func(a *Added) { a.Group = true }); err != nil {
					return err
				}
			}
			if ok, err := exists(ctx, e, "passwd", ComponentUser); err != nil {
				return err
			} else if !ok {
				if _, err := e.Commander.Run(ctx, "useradd", "--system", "-g", ComponentGroup, ComponentUser); err != nil {
					return fmt.Errorf("create user %s: %w", ComponentUser, err)
				}
				if err := e.markAdded(func(a *Added) { a.User = true }); err != nil {
					return err
				}
			}
			return nil
		},
		Undo: func(ctx context.Context, e *Env) error {
			if e.rec.Added.User {
				if ok, _ := exists(ctx, e, "passwd", ComponentUser); ok {
					if _, err := e.Commander.Run(ctx, "userdel", ComponentUser); err != nil {
						return fmt.Errorf("remove user %s: %w", ComponentUser, err)
					}
				}
				e.rec.Added.User = false
			}
			if e.rec.Added.Group {
				if ok, _ := exists(ctx, e, "group", ComponentGroup); ok {
					if _, err := e.Commander.Run(ctx, "groupdel", ComponentGroup); err != nil {
						return fmt.Errorf("remove group %s: %w", ComponentGroup, err)
					}
				}
				e.rec.Added.Group = false
			}
			return nil
		},
	}
}

// exists asks getent whether a user (db "passwd") or group exists; getent
// exits 2 for "not found".
func exists(ctx context.Context, e *Env, db, name string) (bool, error) {
	_, err := e.Commander.Run(ctx, "getent", db, name)
	if err == nil {
		return true, nil
	}
	if exitCode(err) == 2 {
		return false, nil
	}
	return false, fmt.Errorf("look up %s %s: %w", db, name, err)
}

// ---- nucleus ----

// The files placed in the Greengrass root for the nucleus.
const (
	nucleusCertFile = "cert.pem"
	nucleusKeyFile  = "private.key"
	nucleusCAFile   = "rootCA.pem"
)

func nucleusStep() Step {
	return Step{
		Name:  "nucleus",
		Title: "install the Greengrass nucleus",
		Describe: func(e *Env) string {
			return fmt.Sprintf("copy the device certificate, key (0600) and CA into %s, write the init config %s, and run: %s",
				e.Options.GreengrassRoot, filepath.Join(e.Options.StateDir, InitConfigFile), strings.Join(append([]string{"java"}, javaArgs(e)...), " "))
		},
		Done: func(_ context.Context, e *Env) (bool, error) { return nucleusInstalled(e), nil },
		Run: func(ctx context.Context, e *Env) error {
			if err := e.openStateDir(); err != nil {
				return err
			}
			root := e.Options.GreengrassRoot
			if _, err := os.Stat(e.host(root)); errors.Is(err, fs.ErrNotExist) {
				if err := e.markAdded(func(a *Added) { a.GreengrassRoot = true }); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(e.host(root), 0o755); err != nil {
				return fmt.Errorf("create the Greengrass root: %w", err)
			}
			for _, f := range []struct {
				from, to string
				mode     os.FileMode
			}{
				{statedir.CertFile, nucleusCertFile, 0o644},
				{statedir.KeyFile, nucleusKeyFile, 0o600},
				{statedir.ServerCAFile, nucleusCAFile, 0o644},
			} {
				b, err := e.dir.ReadFile(f.from)
				if err != nil {
					return err
				}
				if err := writeFileAtomic(e.host(filepath.Join(root, f.to)), b, f.mode); err != nil {
					return err
				}
			}
			conf, err := e.dir.ReadFile(statedir.InstallerConfigFile)
			if err != nil {
				return fmt.Errorf("the broker's installer config: %w", err)
			}
			init, err := InitConfig(conf, root)
			if err != nil {
				return err
			}
			if err := e.dir.WriteFile(InitConfigFile, init, statedir.PublicMode); err != nil {
				return err
			}
			if err := e.markAdded(func(a *Added) { a.Nucleus = true }); err != nil {
				return err
			}
			if _, err := e.Commander.Run(ctx, "java", javaArgs(e)...); err != nil {
				return fmt.Errorf("the Greengrass nucleus installer failed (its log: %s): %w", filepath.Join(root, "logs", "greengrass.log"), err)
			}
			if !nucleusInstalled(e) {
				return fmt.Errorf("the Greengrass nucleus installer finished but %s is missing: see %s", loaderPath(root), filepath.Join(root, "logs", "greengrass.log"))
			}
			return nil
		},
		Undo: func(ctx context.Context, e *Env) error {
			if e.rec.Added.Nucleus {
				// The nucleus installer's --setup-system-service made greengrass.service.
				_, _ = e.Commander.Run(ctx, "systemctl", "stop", "greengrass.service")
				_, _ = e.Commander.Run(ctx, "systemctl", "disable", "greengrass.service")
				if err := os.Remove(e.host("/etc/systemd/system/greengrass.service")); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				_, _ = e.Commander.Run(ctx, "systemctl", "daemon-reload")
				e.rec.Added.Nucleus = false
			}
			if e.rec.Added.GreengrassRoot {
				if err := os.RemoveAll(e.host(e.Options.GreengrassRoot)); err != nil {
					return err
				}
				_ = os.Remove(filepath.Dir(e.host(e.Options.GreengrassRoot))) // /greengrass, if now empty
				e.rec.Added.GreengrassRoot = false
			}
			return nil
		},
	}
}

// javaArgs is the nucleus installer's command line (after "java").
func javaArgs(e *Env) []string {
	return []string{
		"-Droot=" + e.Options.GreengrassRoot,
		"-Dlog.store=FILE",
		"-jar", greengrassJar(e),
		"--init-config", filepath.Join(e.Options.StateDir, InitConfigFile),
		"--component-default-user", ComponentUser + ":" + ComponentGroup,
		"--setup-system-service", "true",
	}
}

func loaderPath(root string) string {
	return filepath.Join(root, "alts", "current", "distro", "bin", "loader")
}

// nucleusInstalled reports whether the nucleus installer has set up the
// root: its loader, which greengrass.service runs, is in place.
func nucleusInstalled(e *Env) bool {
	_, err := os.Stat(e.host(loaderPath(e.Options.GreengrassRoot)))
	return err == nil
}

// ---- service ----

func serviceConfig(e *Env) service.Config {
	return service.Config{
		Name:        ServiceName,
		DisplayName: "ggfleet agent",
		Description: "ggfleet agent (AWS IoT Greengrass V2 core management)",
		Executable:  e.Options.Executable,
		Arguments:   serviceArguments(e),
		Option:      service.KeyValue{"SystemdScript": packaging.AgentUnit},
	}
}

func serviceArguments(e *Env) []string {
	return []string{"run", "--state-dir", e.Options.StateDir, "--runtime", e.Options.Runtime}
}

func unitPath(e *Env) string {
	return e.host("/etc/systemd/system/" + packaging.AgentUnitName)
}

func serviceStep() Step {
	return Step{
		Name:  "service",
		Title: "register and start the ggagent service",
		Describe: func(e *Env) string {
			return fmt.Sprintf("write %s (packaging's unit, ExecStart=%s %s), write %s if missing, systemctl enable and start %s",
				"/etc/systemd/system/"+packaging.AgentUnitName, e.Options.Executable, strings.Join(serviceArguments(e), " "), packaging.AgentDefaultsPath, packaging.AgentUnitName)
		},
		Done: func(_ context.Context, e *Env) (bool, error) {
			want, err := packaging.RenderAgentUnit(e.Options.Executable, serviceArguments(e))
			if err != nil {
				return false, err
			}
			if got, err := os.ReadFile(unitPath(e)); err != nil || string(got) != want {
				return false, nil
			}
			svc, err := e.NewService(serviceConfig(e))
			if err != nil || svc.Platform() != PlatformSystemd {
				return false, nil
			}
			st, err := svc.Status()
			return err == nil && st == service.StatusRunning, nil
		},
		Run: func(ctx context.Context, e *Env) error {
			svc, err := e.NewService(serviceConfig(e))
			if err != nil {
				return fmt.Errorf("service: %w", err)
			}
			if p := svc.Platform(); p != PlatformSystemd {
				return fmt.Errorf("%w: the service manager found here is %q, not systemd; kardianos/service would silently install a SysV init script instead of the ggagent unit, so nothing was installed. Boot the device with systemd (PID 1), or install with --no-service and run `ggagent run` yourself", ErrNotSystemd, p)
			}
			want, err := packaging.RenderAgentUnit(e.Options.Executable, serviceArguments(e))
			if err != nil {
				return err
			}
			got, err := os.ReadFile(unitPath(e))
			switch {
			case err == nil && string(got) == want:
			case err == nil:
				// An older or different unit: replace it.
				_ = svc.Stop()
				if err := svc.Uninstall(); err != nil {
					return fmt.Errorf("replace the existing %s: %w", unitPath(e), err)
				}
				fallthrough
			default:
				if err := e.markAdded(func(a *Added) { a.Service = true }); err != nil {
					return err
				}
				if err := svc.Install(); err != nil {
					return fmt.Errorf("install the ggagent service: %w", err)
				}
			}
			if _, err := os.Stat(e.host(packaging.AgentDefaultsPath)); errors.Is(err, fs.ErrNotExist) {
				if err := os.MkdirAll(filepath.Dir(e.host(packaging.AgentDefaultsPath)), 0o755); err != nil {
					return err
				}
				if err := writeFileAtomic(e.host(packaging.AgentDefaultsPath), []byte(packaging.AgentDefaults), 0o644); err != nil {
					return err
				}
				if err := e.markAdded(func(a *Added) { a.Defaults = true }); err != nil {
					return err
				}
			}
			if st, err := svc.Status(); err == nil && st == service.StatusRunning {
				return nil
			}
			if err := svc.Start(); err != nil {
				return fmt.Errorf("start the ggagent service: %w (see journalctl -u ggagent)", err)
			}
			return nil
		},
		Undo: func(_ context.Context, e *Env) error {
			if e.rec.Added.Service {
				svc, err := e.NewService(serviceConfig(e))
				if err != nil {
					return err
				}
				if svc.Platform() != PlatformSystemd {
					return fmt.Errorf("%w: cannot remove the ggagent service here", ErrNotSystemd)
				}
				_ = svc.Stop()
				if _, err := os.Stat(unitPath(e)); err == nil {
					if err := svc.Uninstall(); err != nil {
						return fmt.Errorf("remove the ggagent service: %w", err)
					}
				}
				e.rec.Added.Service = false
			}
			if e.rec.Added.Defaults {
				if err := os.Remove(e.host(packaging.AgentDefaultsPath)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				e.rec.Added.Defaults = false
			}
			return nil
		},
	}
}

// ---- wait for the first report ----

// agentStatus is the part of the daemon's status.json the wait reads.
type agentStatus struct {
	UpdatedAt    time.Time `json:"updatedAt"`
	Connected    bool      `json:"connected"`
	OutboxLength int       `json:"outboxLength"`
	Delivered    uint64    `json:"delivered"`
	LastReport   time.Time `json:"lastReport"`
}

// acknowledged reports whether s shows a health report the broker acknowledged.
func (s agentStatus) acknowledged() bool {
	return s.Connected && !s.LastReport.IsZero() && s.Delivered > 0 && s.OutboxLength == 0
}

func waitStep() Step {
	return Step{
		Name:  "wait",
		Title: "wait for the first acknowledged health report",
		Describe: func(e *Env) string {
			return fmt.Sprintf("poll %s for up to %s until the agent is connected and the broker acknowledged a health report", filepath.Join(e.Options.StateDir, statedir.StatusFile), e.Options.Wait)
		},
		Done: func(context.Context, *Env) (bool, error) { return false, nil },
		Run: func(ctx context.Context, e *Env) error {
			since := e.Now().Add(-time.Second)
			timer := time.NewTimer(e.Options.Wait)
			defer timer.Stop()
			tick := time.NewTicker(e.PollInterval)
			defer tick.Stop()
			var last agentStatus
			for {
				var s agentStatus
				if err := e.dir.ReadJSON(statedir.StatusFile, &s); err == nil {
					last = s
					if s.UpdatedAt.After(since) && s.acknowledged() {
						return nil
					}
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
					return waitTimeout(e, last)
				case <-tick.C:
				}
			}
		},
	}
}

func waitTimeout(e *Env, last agentStatus) error {
	var what string
	switch {
	case last.UpdatedAt.IsZero():
		what = "the agent wrote no status: it is not running"
	case !last.Connected:
		what = "the agent is running but not connected to the broker's MQTT endpoint"
	default:
		what = fmt.Sprintf("the agent is connected but no health report was acknowledged yet (%d waiting)", last.OutboxLength)
	}
	id, _ := loadIdentity(e)
	return fmt.Errorf("no acknowledged health report within %s: %s. Check: journalctl -u ggagent; that this device reaches the broker's MQTT endpoint %s (firewall, DNS); ggagent status --state-dir %s. The install is otherwise complete; re-run ggagent install to wait again",
		e.Options.Wait, what, id.MQTTEndpoint, e.Options.StateDir)
}

// ---- summary ----

func summaryStep() Step {
	return Step{
		Name:     "summary",
		Title:    "summary",
		Describe: func(*Env) string { return "print the thing name, broker, service state and next steps" },
		Done:     func(context.Context, *Env) (bool, error) { return false, nil },
		Run: func(ctx context.Context, e *Env) error {
			id, ok := loadIdentity(e)
			if !ok {
				return errors.New("no identity in the state directory")
			}
			fmt.Fprintln(e.Out)
			fmt.Fprintf(e.Out, "  Core (thing):    %s\n", id.ThingName)
			fmt.Fprintf(e.Out, "  Broker:          %s (mode %s, MQTT %s)\n", id.BrokerURL, id.Mode, id.MQTTEndpoint)
			fmt.Fprintf(e.Out, "  Runtime:         %s\n", e.Options.Runtime)
			if e.Options.Runtime == RuntimeGreengrass {
				fmt.Fprintf(e.Out, "  Nucleus:         %s (greengrass.service)\n", e.Options.GreengrassRoot)
			}
			fmt.Fprintf(e.Out, "  State directory: %s\n", e.Options.StateDir)
			if e.Options.NoService {
				fmt.Fprintf(e.Out, "  Service:         not installed (--no-service)\n")
				fmt.Fprintf(e.Out, "Next: run the agent yourself: %s %s\n", e.Options.Executable, strings.Join(serviceArguments(e), " "))
				return nil
			}
			fmt.Fprintf(e.Out, "  Service:         %s (%s)\n", ServiceName, ServiceState(ctx, e.Commander))
			fmt.Fprintln(e.Out, "Next: ggagent status; journalctl -u ggagent -f; deploy to this core from the broker.")
			return nil
		},
	}
}

// ServiceState is `systemctl is-active ggagent.service` ("active",
// "inactive", "failed", …) or "unknown" when systemctl cannot say.
func ServiceState(ctx context.Context, c Commander) string {
	out, _ := c.Run(ctx, "systemctl", "is-active", packaging.AgentUnitName)
	s := strings.TrimSpace(string(out))
	if s == "" || strings.ContainsAny(s, "\n") {
		return "unknown"
	}
	return s
}

// ---- helpers ----

func isURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

func isHexSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// writeFileAtomic writes a file outside the state directory atomically.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
