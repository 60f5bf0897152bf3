// Package server is the broker's composition root: it is the only place
// that names concrete implementations (SQLite store, local provider, river
// queue) and wires them into the domain services and the HTTP API. Run
// starts everything, prints the start-up banner, and shuts down cleanly
// when its context ends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/jobs"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/ggconfig"
)

// Run runs the broker until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	db, err := sqlstore.OpenSQLite(ctx, cfg.dbPath(), log)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}

	// Certificate authority.
	secretsKey, err := ca.LoadOrCreateSecretsKey(cfg.secretsKeyPath())
	if err != nil {
		return err
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: secretsKey, Logger: log})
	defaultCA, _, err := authority.Init(ctx)
	if err != nil {
		return fmt.Errorf("initialise the certificate authority: %w", err)
	}

	// Provider and domain services.
	prov, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: filepath.Join(cfg.DataDir, "artifacts"), Logger: log})
	if err != nil {
		return err
	}
	defer prov.Close()
	provSvc := provisioning.New(provisioning.Config{Store: db, Provider: prov, Issuer: authority, Logger: log})
	if err := provSvc.SeedDefaults(ctx); err != nil {
		return fmt.Errorf("seed default provisioning templates: %w", err)
	}
	tmplSvc := templates.New(templates.Config{Store: db, Logger: log})

	installerConfig := func(alias string, in cores.ConfigInput) (string, error) {
		return ggconfig.Generate(alias, cfg.ggParams(in.CoreName, in.CoreVersion, in.ProvisioningTemplate, in.Parameters))
	}
	devSvc := devices.New(devices.Config{Store: db.Devices(), Tasks: db, Provider: prov, Provisioner: provSvc, Logger: log})
	coreSvc := cores.New(cores.Config{Store: db.Cores(), Tasks: db, Provider: prov, Provisioner: provSvc,
		ConfigGen: installerConfig, Devices: devSvc, Logger: log})

	runner := &tasks.Runner{Store: db, Logger: log, Processors: map[tasks.Kind]tasks.Processor{
		tasks.KindCore:   coreSvc,
		tasks.KindDevice: devSvc,
	}}
	queue, err := jobs.New(jobs.Config{DB: db.SQL(), Runner: runner, Logger: log, Workers: cfg.Workers})
	if err != nil {
		return err
	}
	if err := queue.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	db.SetEnqueuer(queue.EnqueueTx)

	authSvc := auth.New(auth.Config{Store: db, Logger: log})
	tokenPath := filepath.Join(cfg.DataDir, "admin.token")
	tokenCreated, err := authSvc.EnsureAdminToken(ctx, tokenPath)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}

	enrollSvc := enroll.New(enroll.Config{Store: db, Cores: coreCA{cores: coreSvc, provider: prov}, Issuer: authority, Provider: prov, Registrar: prov,
		ServerCAPEM: func(ctx context.Context) (string, error) {
			c, err := authority.Default(ctx)
			return c.CertificatePem, err
		},
		Config: func(ctx context.Context, core string) (string, error) {
			return ggconfig.Generate("MANUAL_INSTALL", cfg.ggParams(core, "", "", nil))
		},
		MQTTEndpoint: cfg.mqttEndpoint(), BrokerURL: cfg.publicURL(), Logger: log})

	api := httpapi.New(httpapi.Deps{
		Logger: log, Auth: authSvc, Ready: db.Ping,
		Templates: tmplSvc, Cores: coreSvc, Devices: devSvc, Provisioning: provSvc,
		Registry: prov, CAs: authority, Enrollment: enrollSvc, Artifacts: prov,
		MaxBodyBytes: cfg.MaxBodyBytes, BaseURL: cfg.publicURL(),
	})

	// HTTP listener (HTTPS with --tls-cert/--tls-key or --tls-auto).
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	var pin string
	switch {
	case cfg.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	case cfg.TLSAuto:
		hosts := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.TLSHosts...)
		if h, _, err := net.SplitHostPort(cfg.Listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
		cert, err := authority.ServerCertificate(ctx, hosts)
		if err != nil {
			ln.Close()
			return fmt.Errorf("issue the --tls-auto certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		pin = defaultCA.ID
	}
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := queue.Start(runCtx); err != nil {
		ln.Close()
		return fmt.Errorf("start job queue: %w", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	log.Info("ggfleet started", "version", version.Version, "api", cfg.publicURL(), "provider", prov.Mode(), "defaultCA", defaultCA.ID)
	printBanner(cfg.Banner, cfg, tokenPath, tokenCreated, defaultCA, pin)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server failed", "err", err)
		}
	}
	log.Info("shutting down")
	sdCtx, sdCancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer sdCancel()
	_ = srv.Shutdown(sdCtx)
	if err := queue.Stop(sdCtx); err != nil {
		log.Warn("job queue did not stop cleanly", "err", err)
	}
	return nil
}

// ggParams builds the installer-config inputs from the broker's settings.
func (c *Config) ggParams(core, coreVersion, template string, params map[string]string) ggconfig.Params {
	host, port, _ := net.SplitHostPort(c.mqttEndpoint())
	p := ggconfig.Params{CoreName: core, Version: coreVersion, ProvisioningTemplate: template, TemplateParameters: params,
		AWSRegion: c.AWSRegion, IoTRoleAlias: c.IoTRoleAlias, IoTDataEndpoint: host, IoTCredEndpoint: apiHost(c.publicURL())}
	if n, err := net.LookupPort("tcp", port); err == nil {
		p.MQTTPort = n
	}
	if p.Version == "" {
		p.Version = "2.12.0"
	}
	return p
}

func apiHost(u string) string {
	for _, pre := range []string{"https://", "http://"} {
		if len(u) > len(pre) && u[:len(pre)] == pre {
			u = u[len(pre):]
		}
	}
	if h, _, err := net.SplitHostPort(u); err == nil {
		return h
	}
	return u
}

// printBanner tells the operator what is running and what to do next.
func printBanner(w io.Writer, cfg Config, tokenPath string, tokenCreated bool, def ca.CA, pin string) {
	if w == nil {
		return
	}
	url := cfg.publicURL()
	fmt.Fprintf(w, "ggfleet %s is running (provider %s)\n", version.Version, cfg.Provider)
	fmt.Fprintf(w, "  API:          %s\n", url)
	fmt.Fprintf(w, "  MQTT:         %s (mutual TLS)\n", cfg.mqttEndpoint())
	if tokenCreated {
		fmt.Fprintf(w, "  Admin token:  written to %s (0600; shown nowhere else)\n", tokenPath)
	} else {
		fmt.Fprintf(w, "  Admin token:  %s\n", tokenPath)
	}
	fmt.Fprintf(w, "  Default CA:   %s\n", def.ID)
	if pin != "" {
		fmt.Fprintf(w, "  TLS:          certificate from the default CA; devices pin it with --ca-sha256 %s\n", pin)
	}
	fmt.Fprintf(w, "\nNext: provision a core\n")
	fmt.Fprintf(w, "  curl -s -H \"Authorization: Bearer $(cat %s)\" -H 'Content-Type: application/json' \\\n", tokenPath)
	fmt.Fprintf(w, "    -X POST %s/coreTasks -d '{\"type\":\"Create\",\"coreVersion\":\"2.12.0\",\"cores\":[{\"name\":\"core-1\",\"provisioningTemplate\":\"ggfleet-core\",\"provisioningParameters\":{\"ThingName\":\"core-1\"},\"configFileGenerator\":\"MANUAL_INSTALL\"}]}'\n", url)
}
