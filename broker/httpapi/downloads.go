package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/packaging"
)

// Downloads is what the broker serves a fresh device: its ggagent builds
// (GET /downloads/ggagent/{os}/{arch}) and the installer script
// (GET /install.sh). Both routes are open: a device has no token yet.
type Downloads struct {
	// Dir is --downloads-dir: the directory `make cross` fills (dist/),
	// holding ggagent_linux_amd64, ggagent_linux_arm64 and ggagent_linux_armv7.
	Dir string
	// CASHA256 is the hex SHA-256 of the broker's CA certificate, which
	// install.sh passes to `ggagent install --ca-sha256`; "" when the
	// broker's TLS certificate is not from its own CA.
	CASHA256 string
	// CAPEM is that CA's certificate, which install.sh trusts for its
	// downloads; "" trusts the device's system roots.
	CAPEM string
}

// downloadArchs are the {arch} values of GET /downloads/ggagent/linux/{arch}.
var downloadArchs = []string{"amd64", "arm64", "armv7"}

// downloadFileName is the name of the build for arch in Downloads.Dir.
func downloadFileName(arch string) string { return "ggagent_linux_" + arch }

// downloadServer serves Downloads, caching each build's SHA-256 for as
// long as its size and modification time stay the same.
type downloadServer struct {
	a    *API
	mu   sync.Mutex
	sums map[string]fileSum
}

type fileSum struct {
	size    int64
	modTime time.Time
	hex     string
}

func newDownloadServer(a *API) *downloadServer {
	return &downloadServer{a: a, sums: map[string]fileSum{}}
}

// sum returns the hex SHA-256 of the open file f (at path, described by
// st), hashing it only when the cache has nothing for this size and
// mtime; f is left at its start.
func (s *downloadServer) sum(path string, f *os.File, st fs.FileInfo) (string, error) {
	s.mu.Lock()
	c, ok := s.sums[path]
	s.mu.Unlock()
	if ok && c.size == st.Size() && c.modTime.Equal(st.ModTime()) {
		return c.hex, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	s.mu.Lock()
	s.sums[path] = fileSum{size: st.Size(), modTime: st.ModTime(), hex: sum}
	s.mu.Unlock()
	return sum, nil
}

// agent serves GET /downloads/ggagent/{os}/{arch}: the build with its
// SHA-256 in X-Checksum-Sha256, or, for {arch}.sha256, the checksum line
// "<hex>  ggagent" that sha256sum -c reads.
func (s *downloadServer) agent(w http.ResponseWriter, r *http.Request) {
	goos, arch := r.PathValue("os"), r.PathValue("arch")
	arch, sumOnly := strings.CutSuffix(arch, ".sha256")
	if goos != "linux" {
		writeMessage(w, r, http.StatusNotFound, "no ggagent build for "+goos+": ggagent is built for linux only")
		return
	}
	valid := false
	for _, a := range downloadArchs {
		valid = valid || a == arch
	}
	if !valid {
		writeMessage(w, r, http.StatusNotFound, "no ggagent build for linux/"+arch+": the architectures are "+strings.Join(downloadArchs, ", "))
		return
	}
	dir := s.a.d.Downloads.Dir
	if dir == "" {
		writeMessage(w, r, http.StatusNotFound, "this broker serves no ggagent builds: start it with --downloads-dir (the dist/ directory `make cross` fills)")
		return
	}
	path := filepath.Join(dir, downloadFileName(arch))
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		writeMessage(w, r, http.StatusNotFound, "no ggagent build for linux/"+arch+": "+downloadFileName(arch)+" is not in --downloads-dir (run `make cross`)")
		return
	}
	if err != nil {
		s.a.log.Error("open ggagent build", "path", path, "err", err)
		writeMessage(w, r, http.StatusInternalServerError, "internal error: cannot read the ggagent build")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	var sum string
	if err == nil {
		sum, err = s.sum(path, f, st)
	}
	if err != nil {
		s.a.log.Error("read ggagent build", "path", path, "err", err)
		writeMessage(w, r, http.StatusInternalServerError, "internal error: cannot read the ggagent build")
		return
	}
	w.Header().Set("X-Checksum-Sha256", sum)
	if sumOnly {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, sum+"  ggagent\n")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="ggagent"`)
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// installScript serves GET /install.sh: packaging's installer with this
// broker's URL, CA pin and CA certificate filled in.
func (s *downloadServer) installScript(w http.ResponseWriter, r *http.Request) {
	base := s.a.d.BaseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	script, err := packaging.RenderInstallScript(base, s.a.d.Downloads.CASHA256, s.a.d.Downloads.CAPEM)
	if err != nil {
		s.a.log.Error("render install.sh", "err", err)
		writeMessage(w, r, http.StatusInternalServerError, "internal error: cannot render install.sh")
		return
	}
	w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
	_, _ = io.WriteString(w, script)
}
