package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// nfpmVersion is the nfpm `make package` installs (newer ones fail here).
const nfpmVersion = "v2.45.2"

// need returns the path of a tool the package test cannot run without.
// Outside CI a missing tool skips the test; in CI (CI set) it fails it.
func need(t *testing.T, path string, err error, why string) string {
	t.Helper()
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s: %v", why, err)
	}
	t.Fatalf("%s: %v", why, err)
	return ""
}

// nfpmPath finds nfpm: the repository's .bin/nfpm (what `make package`
// installs), nfpm on PATH, or installs the pinned version into .bin.
func nfpmPath(t *testing.T) string {
	t.Helper()
	local, err := filepath.Abs("../.bin/nfpm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if p, err := exec.LookPath("nfpm"); err == nil {
		return p
	}
	cmd := exec.Command("go", "install", "github.com/goreleaser/nfpm/v2/cmd/nfpm@"+nfpmVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(local))
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, out)
	}
	return need(t, local, err, "install nfpm "+nfpmVersion)
}

// run runs a command in dir and returns its standard output.
func run(t *testing.T, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestPackages builds every .deb and .rpm `make package` builds, from the
// specs in nfpm/ with stand-in binaries, and checks what they install:
// exactly the binary, the unit and the /etc/default file, the unit
// byte for byte what `ggagent install` writes, and the maintainer scripts.
func TestPackages(t *testing.T) {
	nfpm := nfpmPath(t)
	dpkgDeb := need(t, lookPath("dpkg-deb"), lookErr("dpkg-deb"), "dpkg-deb lists .deb files")
	rpmBin := need(t, lookPath("rpm"), lookErr("rpm"), "rpm lists .rpm files (apt-get install rpm)")

	tmp := t.TempDir()
	units := filepath.Join(tmp, "units")
	if err := WriteShippedFiles(units); err != nil {
		t.Fatal(err)
	}
	shipped, err := ShippedFiles()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		prog, arch, nfpmArch, debArch, rpmArch string
	}{
		{"ggagent", "amd64", "amd64", "amd64", "x86_64"},
		{"ggagent", "arm64", "arm64", "arm64", "aarch64"},
		{"ggagent", "armv7", "arm7", "armhf", "armv7hl"},
		{"ggfleet", "amd64", "amd64", "amd64", "x86_64"},
		{"ggfleet", "arm64", "arm64", "arm64", "aarch64"},
	} {
		t.Run(c.prog+"_"+c.arch, func(t *testing.T) {
			out := filepath.Join(tmp, c.prog+"_"+c.arch)
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(out, c.prog+"_linux_"+c.arch)
			binBytes := []byte("#!/bin/sh\necho " + c.prog + " " + c.arch + "\n")
			if err := os.WriteFile(bin, binBytes, 0o755); err != nil {
				t.Fatal(err)
			}
			env := []string{"ARCH=" + c.nfpmArch, "VERSION=1.2.3+git0abc", "BIN=" + bin, "UNITS=" + units}
			for _, p := range []string{"deb", "rpm"} {
				run(t, repo, env, nfpm, "package", "--config", "packaging/nfpm/"+c.prog+".yaml", "--packager", p, "--target", out+"/")
			}
			deb := filepath.Join(out, fmt.Sprintf("%s_1.2.3+git0abc-1_%s.deb", c.prog, c.debArch))
			rpm := filepath.Join(out, fmt.Sprintf("%s-1.2.3+git0abc-1.%s.rpm", c.prog, c.rpmArch))
			unit := "/lib/systemd/system/" + c.prog + ".service"
			defaults := "/etc/default/" + c.prog
			binary := "/usr/bin/" + c.prog

			// dpkg-deb -c: files with their modes, directories aside.
			var debFiles []string
			for _, line := range strings.Split(strings.TrimSpace(string(run(t, "", nil, dpkgDeb, "-c", deb))), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 || strings.HasPrefix(f[0], "d") {
					continue
				}
				debFiles = append(debFiles, f[0]+" "+f[1]+" "+strings.TrimPrefix(f[5], "."))
			}
			wantDeb := []string{"-rw-r--r-- root/root " + defaults, "-rw-r--r-- root/root " + unit, "-rwxr-xr-x root/root " + binary}
			if !slices.Equal(debFiles, wantDeb) {
				t.Errorf("dpkg-deb -c %s:\n%s\nwant:\n%s", filepath.Base(deb), strings.Join(debFiles, "\n"), strings.Join(wantDeb, "\n"))
			}
			if got := strings.TrimSpace(string(run(t, "", nil, dpkgDeb, "-f", deb, "Architecture"))); got != c.debArch {
				t.Errorf("deb Architecture = %q, want %q", got, c.debArch)
			}
			if got := strings.TrimSpace(string(run(t, "", nil, dpkgDeb, "-I", deb, "conffiles"))); got != defaults {
				t.Errorf("deb conffiles = %q, want %q", got, defaults)
			}

			// rpm -qlp: the same files; the defaults file is %config(noreplace).
			rpmFiles := strings.Split(strings.TrimSpace(string(run(t, "", nil, rpmBin, "-qlp", rpm))), "\n")
			if want := []string{defaults, unit, binary}; !slices.Equal(rpmFiles, want) {
				t.Errorf("rpm -qlp %s = %q, want %q", filepath.Base(rpm), rpmFiles, want)
			}
			if got := strings.TrimSpace(string(run(t, "", nil, rpmBin, "-qcp", rpm))); got != defaults {
				t.Errorf("rpm -qcp = %q, want %q", got, defaults)
			}
			scripts := string(run(t, "", nil, rpmBin, "-qp", "--scripts", rpm))
			for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
				if !strings.Contains(scripts, s) {
					t.Errorf("rpm has no %s:\n%s", s, scripts)
				}
			}

			// The installed bytes: unit, defaults and binary from the .deb.
			root := filepath.Join(out, "root")
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, "", nil, dpkgDeb, "-x", deb, root)
			for path, want := range map[string]string{
				unit:     shipped[c.prog+".service"],
				defaults: shipped[c.prog+".default"],
				binary:   string(binBytes),
			} {
				got, err := os.ReadFile(filepath.Join(root, path))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("%s in the .deb differs from what packaging ships:\n%s\nwant:\n%s", path, got, want)
				}
			}
			if c.prog == "ggagent" {
				want, err := RenderAgentUnit(AgentBinary, DefaultAgentArguments())
				if err != nil {
					t.Fatal(err)
				}
				if shipped[AgentUnitName] != want {
					t.Error("the packaged ggagent.service is not RenderAgentUnit(AgentBinary, DefaultAgentArguments())")
				}
			}
			control := filepath.Join(out, "control")
			run(t, "", nil, dpkgDeb, "-e", deb, control)
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				b, err := os.ReadFile(filepath.Join(control, s))
				if err != nil {
					t.Errorf("deb has no %s: %v", s, err)
					continue
				}
				if !bytes.HasPrefix(b, []byte("#!/bin/sh\n")) {
					t.Errorf("deb %s does not start with #!/bin/sh", s)
				}
			}
		})
	}
}

func lookPath(name string) string { p, _ := exec.LookPath(name); return p }
func lookErr(name string) error   { _, err := exec.LookPath(name); return err }
