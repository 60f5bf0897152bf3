package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"

	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
)

// buildBroker builds ggfleet into dir and returns the binary's path.
func buildBroker(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "ggfleet")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./broker/cmd/ggfleet")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build ggfleet (run fleetbench from the repository root): %w\n%s", err, out.String())
	}
	return bin, nil
}

// replica is one `ggfleet serve` process.
type replica struct {
	url     string
	pprof   string // its --pprof-listen, as a URL
	dataDir string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startReplica runs `ggfleet serve` on free ports with its own data dir
// under dir and waits until /readyz answers 200.
func startReplica(ctx context.Context, bin, dir string, extra ...string) (*replica, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	r := &replica{url: "http://" + listen, pprof: "http://" + pprofAddr, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "broker.log"), done: make(chan struct{})}
	if err := os.MkdirAll(r.dataDir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--data-dir", r.dataDir, "--listen", listen, "--mqtt-listen", mqttAddr,
		"--log-format", "json", "--log-level", "info", "--pprof-listen", pprofAddr}, extra...)
	r.cmd = exec.Command(bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start ggfleet serve: %w", err)
	}
	go func() { // owned by stop, which waits for done
		_ = r.cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-r.done:
			return nil, fmt.Errorf("ggfleet serve exited at start; log %s:\n%s", r.logPath, r.tail())
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := client.Get(r.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("ggfleet serve not ready after 2 minutes; log %s:\n%s", r.logPath, r.tail())
		}
	}
}

// cpuProfile writes the replica's CPU profile over the next d to path.
func (r *replica) cpuProfile(ctx context.Context, path string, d time.Duration) error {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", r.pprof, secs), nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Duration(secs)*time.Second + time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CPU profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("CPU profile to %s: %w", path, err)
	}
	return f.Close()
}

// profile starts a CPU profile of every replica over d, each written to
// prefix-replica-N.pprof; wait blocks until all are written (and may be
// called again: it then returns the same error at once).
func (c *cluster) profile(ctx context.Context, prefix string, d time.Duration) (wait func() error) {
	errs := make(chan error, len(c.replicas))
	for i, r := range c.replicas {
		go func() { // owned by wait, which receives every result
			errs <- r.cpuProfile(ctx, fmt.Sprintf("%s-replica-%d.pprof", prefix, i+1), d)
		}()
	}
	return sync.OnceValue(func() error {
		var all []error
		for range c.replicas {
			all = append(all, <-errs)
		}
		return errors.Join(all...)
	})
}

// stop ends the process with SIGTERM (SIGKILL after 30 s) and waits for it.
func (r *replica) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// tail is the end of the replica's log.
func (r *replica) tail() string {
	data, _ := os.ReadFile(r.logPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// cluster is one configuration's running replicas and what they share.
type cluster struct {
	replicas []*replica
	token    string
	mosq     *mosquittotest.Server
	pg       *pgDatabase
}

// startCluster starts cfg's replicas under dir: on PostgreSQL a fresh
// database (dropped by close) and one secrets key for all; with Mosquitto
// one shared Mosquitto run with docs/mosquitto.md's configuration, the CA
// and CRL files written by the replicas.
func startCluster(ctx context.Context, bin, dir string, cfg config, workers int) (*cluster, error) {
	c := &cluster{}
	if err := c.start(ctx, bin, dir, cfg, workers); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// start starts what startCluster describes, recording each part in c as
// it runs so close stops it.
func (c *cluster) start(ctx context.Context, bin, dir string, cfg config, workers int) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var common []string
	if workers > 0 {
		common = append(common, "--workers", fmt.Sprint(workers))
	}
	// One 10,000-core task is about 1.5 MB of JSON.
	common = append(common, "--max-body-bytes", fmt.Sprint(16<<20))
	if cfg.Postgres {
		if c.pg, err = createDatabase(ctx); err != nil {
			return err
		}
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		keyFile := filepath.Join(dir, "secrets.key")
		if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return err
		}
		common = append(common, "--database", c.pg.url, "--secrets-key-file", keyFile)
	}
	var mosqDir, mosqAddr string
	if cfg.Mosquitto {
		if mosqDir, mosqAddr, err = prepareMosquitto(dir); err != nil {
			return err
		}
		common = append(common, "--mqtt-url", "mqtts://"+mosqAddr, "--mqtt-server-ca-file", filepath.Join(mosqDir, "server-ca.pem"),
			"--mqtt-advertise", mosqAddr, "--mqtt-crl-file", filepath.Join(mosqDir, "crl.pem"), "--mqtt-ca-file", filepath.Join(mosqDir, "ca.pem"))
	}
	for i := range cfg.Replicas {
		args := common
		if cfg.Mosquitto {
			args = append(append([]string{}, common...), "--mqtt-client-id", fmt.Sprintf("ggfleet.broker.r%d", i+1))
		}
		if i >= cfg.Replicas-cfg.APIOnly {
			args = append(append([]string{}, args...), "--workers", "0") // the last one given counts
		}
		r, err := startReplica(ctx, bin, filepath.Join(dir, fmt.Sprintf("replica-%d", i+1)), args...)
		if err != nil {
			return fmt.Errorf("replica %d: %w", i+1, err)
		}
		c.replicas = append(c.replicas, r)
		if i == 0 {
			tok, err := os.ReadFile(filepath.Join(r.dataDir, "admin.token"))
			if err != nil {
				return fmt.Errorf("read the admin token: %w", err)
			}
			c.token = strings.TrimSpace(string(tok))
			if cfg.Mosquitto {
				// The first replica writes ca.pem and crl.pem; Mosquitto
				// needs them to start.
				if err := waitFiles(ctx, time.Minute, filepath.Join(mosqDir, "ca.pem"), filepath.Join(mosqDir, "crl.pem")); err != nil {
					return err
				}
				if c.mosq, err = mosquittotest.Launch(mosqDir, mosqAddr); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// close stops everything startCluster started.
func (c *cluster) close() {
	for _, r := range c.replicas {
		r.stop()
	}
	if c.mosq != nil {
		c.mosq.Stop()
	}
	if c.pg != nil {
		c.pg.drop()
	}
}

// clients returns an API client per replica (a load balancer's view).
func (c *cluster) clients() ([]*apiClient, error) {
	var out []*apiClient
	for _, r := range c.replicas {
		ac, err := newAPIClient(r.url, c.token)
		if err != nil {
			return nil, fmt.Errorf("API client of %s: %w", r.url, err)
		}
		out = append(out, ac)
	}
	return out, nil
}

// prepareMosquitto makes Mosquitto's folder (readable by the user
// mosquitto) with its server certificate and picks its address.
func prepareMosquitto(dir string) (mosqDir, addr string, err error) {
	if _, err := mosquittotest.Find(); err != nil {
		return "", "", fmt.Errorf("the 3-replica configuration needs mosquitto (apt-get install mosquitto): %w", err)
	}
	mosqDir = filepath.Join(dir, "mosquitto")
	if err := os.MkdirAll(mosqDir, 0o755); err != nil {
		return "", "", err
	}
	srvCA, err := mosquittotest.WriteServerTLS(mosqDir)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(mosqDir, "server-ca.pem"), srvCA, 0o644); err != nil {
		return "", "", err
	}
	addr, err = mosquittotest.PickAddr()
	return mosqDir, addr, err
}

func waitFiles(ctx context.Context, limit time.Duration, paths ...string) error {
	deadline := time.Now().Add(limit)
	for _, p := range paths {
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not written after %s", p, limit)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// defaultPostgres is the server fleetbench uses unless
// GGFLEET_TEST_POSTGRES names another (the e2e tests' variable).
const defaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// pgDatabase is a fresh database for one configuration.
type pgDatabase struct {
	admin *sql.DB
	name  string
	url   string
}

// createDatabase creates a fresh database on the PostgreSQL server.
func createDatabase(ctx context.Context) (*pgDatabase, error) {
	admin := os.Getenv("GGFLEET_TEST_POSTGRES")
	if admin == "" {
		admin = defaultPostgres
	}
	adb, err := sql.Open("pgx", admin)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := adb.PingContext(pctx); err != nil {
		adb.Close()
		return nil, fmt.Errorf("PostgreSQL (GGFLEET_TEST_POSTGRES or %s) is not reachable: %w", defaultPostgres, err)
	}
	name := fmt.Sprintf("fleetbench_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := adb.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		adb.Close()
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		adb.Close()
		return nil, err
	}
	u.Path = "/" + name
	return &pgDatabase{admin: adb, name: name, url: u.String()}, nil
}

// drop removes the database.
func (p *pgDatabase) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.admin.ExecContext(ctx, `DROP DATABASE `+p.name+` WITH (FORCE)`); err != nil {
		fmt.Fprintf(os.Stderr, "fleetbench: drop database %s: %v\n", p.name, err)
	}
	p.admin.Close()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
