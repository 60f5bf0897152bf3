// Package server is the broker's composition root: it is the only place
// that names concrete implementations (SQLite store, local provider, river
// queue) and wires them into the domain services and the HTTP API. Run
// starts everything, prints the start-up banner, and shuts down cleanly
// when its context ends.
package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/assetlibrary"
	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/devices"
	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/jobs"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/broker/ui"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/ggconfig"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"github.com/prometheus/client_golang/prometheus"
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
	db, closeDB, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeDB()

	// Certificate authority.
	secretsKey, err := loadSecretsKey(ctx, cfg, db)
	if err != nil {
		return err
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: secretsKey, Logger: log})
	defaultCA, _, err := authority.Init(ctx)
	if err != nil {
		return fmt.Errorf("initialise the certificate authority: %w", err)
	}

	// Provider and domain services.
	cl, err := newCloud(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	defer cl.close()
	if cl.aws != nil {
		if err := registerCAs(ctx, cl.aws, db, authority, log); err != nil {
			return err
		}
	}
	prov := cl.prov
	provSvc := provisioning.New(provisioning.Config{Store: db, Provider: prov, Issuer: authority, Logger: log})
	if err := provSvc.SeedDefaults(ctx); err != nil {
		return fmt.Errorf("seed default provisioning templates: %w", err)
	}
	tmplSvc := templates.New(templates.Config{Store: db, Checker: componentChecker(prov), Logger: log})

	// Events: every producer writes through one durable sink.
	webhooks, err := cfg.webhooks()
	if err != nil {
		return err
	}
	eventSvc := events.New(events.Config{Store: db, Webhooks: webhooks, PollInterval: cfg.eventPollInterval(), Forwarders: cl.forwarders, Logger: log})
	defer eventSvc.Close()
	if err := eventSvc.StartWebhooks(ctx); err != nil {
		return err
	}

	// The embedded MQTT broker. Its handlers call services built below; the
	// bus only starts serving (and calling them) once Run starts it.
	var (
		healthSvc *health.Service
		deploySvc *deploy.Service
		patchSvc  *patches.Service
	)
	logErr := func(what, thing string, err error) {
		if err == nil {
			return
		}
		if errkind.Is(err, errkind.NotFound) {
			log.Debug(what+": not a known core", "thing", thing)
			return
		}
		log.Warn(what+" failed", "thing", thing, "err", err)
	}
	// What reached the handlers, by topic, for /metrics: set against what
	// the agents (or an external broker) sent, it shows messages lost on
	// the way.
	mqttHandled := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ggfleet_mqtt_messages_handled_total",
		Help: "Agent MQTT messages handed to the broker's handlers, by topic (connection, health, deployments/status, agent/hello, other).",
	}, []string{"topic"})
	mqttHosts := tlsHosts(cfg.mqttEndpoint(), cfg.MQTTListen, cfg.TLSHosts)
	bus, err := mqttbus.New(mqttbus.Config{
		Listen:      cfg.MQTTListen,
		Certificate: func(ctx context.Context) (tls.Certificate, error) { return authority.ServerCertificate(ctx, mqttHosts) },
		ClientCAs:   authority.Pool,
		Authorizer:  cl.authorizer,
		Logger:      log,
		Handlers: mqttbus.CountHandled(mqttbus.Handlers{
			OnConnect: func(ctx context.Context, thing string) {
				logErr("re-publish desired deployment", thing, deploySvc.OnConnect(ctx, thing))
			},
			OnDisconnect: func(ctx context.Context, thing string) {
				logErr("record disconnect", thing, healthSvc.HandleDisconnect(ctx, thing))
			},
			OnConnection: func(ctx context.Context, thing string, m mqttmsg.ConnectionMsg) {
				logErr("record connection state", thing, healthSvc.HandleConnection(ctx, thing, m))
			},
			OnHealth: func(ctx context.Context, thing string, m mqttmsg.HealthMsg) {
				logErr("record health report", thing, healthSvc.HandleHealth(ctx, thing, m))
			},
			OnDeploymentStatus: func(ctx context.Context, thing string, m mqttmsg.DeploymentStatusMsg) {
				healthSvc.Touch(ctx, thing)
				logErr("record deployment status", thing, deploySvc.HandleStatus(ctx, thing, m))
			},
			OnHello: func(ctx context.Context, thing string, m mqttmsg.HelloMsg) {
				healthSvc.Touch(ctx, thing)
				logErr("re-send patch jobs", thing, patchSvc.HandleHello(ctx, thing, m.Patches))
				log.Info("agent connected", "thing", thing, "agentVersion", m.AgentVersion)
			},
			OnMessage: func(ctx context.Context, thing, suffix string, payload []byte) {
				healthSvc.Touch(ctx, thing)
				if _, _, _, ok := patchmsg.ParseSuffix(suffix); ok {
					logErr("handle "+suffix, thing, patchSvc.HandleMessage(ctx, thing, suffix, payload))
				}
			},
		}, func(topic string) { mqttHandled.WithLabelValues(topic).Inc() }),
	})
	if err != nil {
		return err
	}
	// With --mqtt-url an external broker is used instead (docs/mosquitto.md).
	msgBus, mqttConns, err := chooseMQTTBus(ctx, cfg, authority, bus, log)
	if err != nil {
		return err
	}
	// In aws mode agents publish to AWS IoT Core, and the broker reads
	// them through its own connection there (aws.go).
	var iotBus *external.Bus
	if cl.aws != nil {
		if iotBus, err = iotCoreBus(ctx, cfg, cl, db, authority, secretsKey, bus.Handlers(), log); err != nil {
			return err
		}
		msgBus, mqttConns = iotBus, nil
	}
	// Deleted cores' certificates are recorded for the CRL an external
	// broker checks (--mqtt-crl-file).
	crlFile := ca.NewCRLFile(ca.CRLFileConfig{Authority: authority, Store: db, CRLPath: cfg.MQTTCRLFile, CAPath: cfg.MQTTCAFile, Logger: log})

	// In aws mode agents and installer configs use the AWS IoT endpoints.
	cfg.awsDataEndpoint, cfg.awsCredEndpoint, cfg.AWSRegion = cl.dataEndpoint, cl.credEndpoint, cl.region

	// Every event goes to the durable event service; a deleted core is also
	// disconnected at once (its certificate is gone, so it cannot return).
	sink := func(ctx context.Context, detailType string, detail any) {
		eventSvc.Publish(ctx, detailType, detail)
		if detailType == events.CoreDeleted {
			if name, ok := deletedCore(detail); ok {
				msgBus.Disconnect(name)
			}
		}
	}

	healthSvc = health.New(health.Config{Store: db.Health(), Registry: cl.registry, Logger: log})
	fleetSvc := fleet.New(fleet.Config{Store: db.Fleet(), Logger: log})

	installerConfig := func(alias string, in cores.ConfigInput) (string, error) {
		return ggconfig.Generate(alias, cfg.ggParams(in.CoreName, in.CoreVersion, in.ProvisioningTemplate, in.Parameters))
	}
	// In local mode the registry is in db too, so a Create batch of cores
	// or client devices commits in one transaction (thingflow.Batch).
	var atomic func(ctx context.Context, fn func(ctx context.Context) error) error
	if cl.aws == nil {
		atomic = db.Atomically
	}
	// A batch reads its template and CA once, asks which of its things
	// exist in one query, and its transaction sends each table's rows in
	// one statement (sqlstore.WithDeferredInserts).
	batchReads := func(ctx context.Context, names []string) context.Context {
		return db.WithAbsentThings(sqlstore.WithDeferredInserts(provisioning.WithBatchReads(ca.WithBatchLookups(ctx))), names)
	}
	devSvc := devices.New(devices.Config{Store: db.Devices(), Tasks: db, Provider: prov, Provisioner: provSvc, Events: sink, Logger: log,
		Atomic: atomic, EventsAll: eventSvc.PublishAll, BatchReads: batchReads})
	coreSvc := cores.New(cores.Config{Store: db.Cores(), Tasks: db, Provider: prov, Provisioner: provSvc, Greengrass: greengrassReader(prov),
		ConfigGen: installerConfig, Devices: devSvc, Events: sink, DeviceView: healthSvc.Device, Logger: log,
		Revoker: thingRevoker{prov: prov, crl: crlFile, now: time.Now}, Atomic: atomic, EventsAll: eventSvc.PublishAll,
		BatchReads: batchReads})

	var al deploy.AssetLibrary // a nil interface unless configured
	if cfg.AssetLibraryURL != "" {
		c, err := assetlibrary.New(assetlibrary.Config{BaseURL: cfg.AssetLibraryURL, Region: cfg.AWSRegion, Logger: log})
		if err != nil {
			return err
		}
		al = c
	}
	// In aws mode Greengrass delivers deployments (awsdeploy.go).
	var deployPub deploy.Publisher = msgBus
	if cl.deployer != nil {
		deployPub = cl.deployer
	}
	deploySvc = deploy.New(deploy.Config{Tasks: db, Store: db, Cores: db.Cores(), Templates: tmplSvc, Provider: prov,
		Publisher: deployPub, AssetLibrary: al, Events: sink, EventsAll: eventSvc.PublishAll, DeploymentTimeout: cfg.DeploymentTimeout, CoreView: coreSvc.GetCore, Logger: log})
	// In aws mode ${aws:s3:presign:...} patch variables are S3 presigned URLs.
	presigner, _ := prov.(patches.Presigner)
	patchSvc = patches.New(patches.Config{Store: db, Publisher: msgBus, Blobs: prov, Presigner: presigner, URLKey: patchURLKey(secretsKey),
		BaseURL: cfg.publicURL(), DispatchTimeout: cfg.PatchDispatchTimeout, Logger: log})

	runner := &tasks.Runner{Store: db, Logger: log, Processors: map[tasks.Kind]tasks.Processor{
		tasks.KindCore:       coreSvc,
		tasks.KindDevice:     devSvc,
		tasks.KindDeployment: deploySvc,
	}}
	queue, err := jobs.New(jobs.Config{DB: db.SQL(), Postgres: db.Dialect() == sqlstore.Postgres, Runner: runner, Logger: log,
		Workers: cfg.Workers, InsertOnly: cfg.Workers == 0})
	if err != nil {
		return err
	}
	if err := queue.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	db.SetEnqueuer(queue.EnqueueTx)

	authSvc := auth.New(auth.Config{Store: db, Sessions: db, Logger: log})
	tokenPath := filepath.Join(cfg.DataDir, "admin.token")
	tokenCreated, err := authSvc.EnsureAdminToken(ctx, tokenPath)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}

	enrollSvc := enroll.New(enroll.Config{Store: db, Cores: coreCA{cores: coreSvc, provider: prov}, Issuer: authority, Provider: cl.enrollProv, Registrar: cl.registrar,
		ServerCAPEM: serverCAPEM(cfg, authority),
		Config: func(ctx context.Context, core string) (string, error) {
			return ggconfig.Generate("MANUAL_INSTALL", cfg.ggParams(core, "", "", nil))
		},
		MQTTEndpoint: cfg.mqttEndpoint(), BrokerURL: cfg.publicURL(), Logger: log})

	// The dashboard at /ui: its static files and the login that turns a
	// token into a session cookie the API accepts from the same origin.
	dashboard, err := ui.New(ui.Config{Sessions: authSvc, BaseURL: cfg.publicURL(),
		SecureCookies: strings.HasPrefix(cfg.publicURL(), "https://"), Logger: log})
	if err != nil {
		return err
	}

	metrics := httpapi.NewMetrics(httpapi.MetricsConfig{Tasks: db, MQTTConnections: mqttConns, Logger: log})
	if err := metrics.Registerer().Register(mqttHandled); err != nil {
		return fmt.Errorf("register the MQTT message counter: %w", err)
	}
	api := httpapi.New(httpapi.Deps{
		Logger: log, Auth: authSvc, Sessions: authSvc, ExtraRoutes: dashboard.Routes(), Ready: readiness(db.Ping, iotBus),
		Templates: tmplSvc, Cores: coreSvc, Devices: devSvc, Provisioning: provSvc,
		Registry: prov, CAs: caService(authority, cl), Enrollment: enrollSvc, Artifacts: cl.artifacts,
		Deployments: deploySvc, Patches: patchSvc, Fleet: fleetSvc, Events: eventSvc, Metrics: metrics,
		MaxBodyBytes: cfg.MaxBodyBytes, BaseURL: cfg.publicURL(),
		Downloads: downloads(cfg, defaultCA),
	})

	// HTTP listener (HTTPS with --tls-cert/--tls-key or --tls-auto).
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	var pin, spkiPin string
	switch {
	case cfg.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	case cfg.TLSAuto:
		cert, err := authority.ServerCertificate(ctx, tlsHosts("", cfg.Listen, cfg.TLSHosts))
		if err != nil {
			ln.Close()
			return fmt.Errorf("issue the --tls-auto certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		pin = defaultCA.ID
		if spkiPin, err = installPin(cfg.DataDir, cert, defaultCA); err != nil {
			ln.Close()
			return err
		}
	}
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	var sides []*sideServer
	closeSides := func() {
		for _, side := range sides {
			side.ln.Close()
		}
	}
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		side, err := listenSide("--metrics-listen", cfg.MetricsListen, mux)
		if err != nil {
			ln.Close()
			return err
		}
		sides = append(sides, side)
	}
	if cfg.PprofListen != "" {
		side, err := listenSide("--pprof-listen", cfg.PprofListen, pprofHandler())
		if err != nil {
			closeSides()
			ln.Close()
			return err
		}
		sides = append(sides, side)
	}

	// Start everything under one context; each goroutine is stopped by
	// cancelling it and waited for before the database closes.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	fail := make(chan error, 16)
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(runCtx); err != nil && runCtx.Err() == nil {
				fail <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goRun("MQTT broker", msgBus.Run)
	if cfg.MQTTCRLFile != "" || cfg.MQTTCAFile != "" {
		goRun("CRL file", crlFile.Run)
	}
	// Periodic work runs on one replica only: the leader of each (on
	// SQLite the process is always the leader). A replica that loses a
	// leadership (PostgreSQL restarted) stops that work and stands for
	// election again. Live event subscriptions are closed once, at shutdown.
	goRun("events", func(ctx context.Context) error {
		defer eventSvc.Close()
		return db.RunAsLeader(ctx, "events", eventSvc.Deliver)
	})
	if cl.deployer != nil {
		cl.deployer.report = deploySvc.HandleStatus
		cl.deployer.jobConfig = deploySvc.JobConfig
		goRun("greengrass deployment outcomes", cl.deployer.Run)
	}
	goRun("deployment deadlines", func(ctx context.Context) error { return db.RunAsLeader(ctx, "deployment-deadlines", deploySvc.Run) })
	goRun("patch dispatch", func(ctx context.Context) error { return db.RunAsLeader(ctx, "patch-dispatch", patchSvc.Run) })
	goRun("job rescue", func(ctx context.Context) error { return db.RunAsLeader(ctx, "job-rescue", queue.RunRescuer) })
	goRun("job queue liveness", queue.Watch)
	if err := queue.Start(runCtx); err != nil {
		cancel()
		wg.Wait()
		closeSides()
		ln.Close()
		return fmt.Errorf("start job queue: %w", err)
	}
	// Retained MQTT state is not trusted across restarts: re-publish every
	// core's desired deployment from the database.
	go func() {
		if err := deploySvc.RepublishAll(runCtx); err != nil && runCtx.Err() == nil {
			log.Warn("re-publish desired deployments", "err", err)
		}
	}()
	serveErr := make(chan error, 1+len(sides))
	go func() { serveErr <- srv.Serve(ln) }()
	for _, side := range sides {
		go func() { serveErr <- side.srv.Serve(side.ln) }()
	}

	log.Info("ggfleet started", "version", version.Version, "api", cfg.publicURL(), "mqtt", cfg.MQTTListen, "provider", prov.Mode(), "defaultCA", defaultCA.ID)
	printBanner(cfg.Banner, cfg, tokenPath, tokenCreated, defaultCA, pin, spkiPin)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("HTTP server: %w", err)
		}
	case runErr = <-fail:
	}
	log.Info("shutting down")
	sdCtx, sdCancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer sdCancel()
	_ = srv.Shutdown(sdCtx)
	for _, side := range sides {
		_ = side.srv.Shutdown(sdCtx)
	}
	if err := queue.Stop(sdCtx); err != nil {
		log.Warn("job queue did not stop cleanly", "err", err)
	}
	cancel()
	wg.Wait()
	return runErr
}

// patchURLKey derives the key that signs patch blob URLs from the secrets
// key, so every replica signs alike and URLs survive a restart.
func patchURLKey(secretsKey []byte) []byte {
	mac := hmac.New(sha256.New, secretsKey)
	mac.Write([]byte("ggfleet patch blob URLs"))
	return mac.Sum(nil)
}

// deletedCore returns the core name of a successful Core Deleted Event.
func deletedCore(detail any) (string, bool) {
	b, err := json.Marshal(detail)
	if err != nil {
		return "", false
	}
	var d struct {
		CoreName string `json:"coreName"`
		Status   string `json:"status"`
	}
	if json.Unmarshal(b, &d) != nil || d.CoreName == "" || d.Status != "success" {
		return "", false
	}
	return d.CoreName, true
}

// tlsHosts lists the names a server certificate must carry: loopback, the
// advertised and listen hosts, and any --tls-host.
func tlsHosts(advertise, listen string, extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, hp := range []string{advertise, listen} {
		if h, _, err := net.SplitHostPort(hp); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
	}
	return append(hosts, extra...)
}

// webhooks reads the webhook secret and pairs it with every --webhook URL.
func (c *Config) webhooks() ([]events.Webhook, error) {
	if len(c.Webhooks) == 0 {
		return nil, nil
	}
	secret, err := events.LoadSecret(c.WebhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	out := make([]events.Webhook, len(c.Webhooks))
	for i, u := range c.Webhooks {
		out[i] = events.Webhook{URL: u, Secret: secret}
	}
	return out, nil
}

// ggParams builds the installer-config inputs from the broker's settings.
func (c *Config) ggParams(core, coreVersion, template string, params map[string]string) ggconfig.Params {
	host, port, _ := net.SplitHostPort(c.mqttEndpoint())
	p := ggconfig.Params{CoreName: core, Version: coreVersion, ProvisioningTemplate: template, TemplateParameters: params,
		AWSRegion: c.AWSRegion, IoTRoleAlias: c.IoTRoleAlias, IoTDataEndpoint: host, IoTCredEndpoint: apiHost(c.publicURL())}
	if c.awsCredEndpoint != "" {
		p.IoTCredEndpoint = c.awsCredEndpoint
	}
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
func printBanner(w io.Writer, cfg Config, tokenPath string, tokenCreated bool, def ca.CA, pin, spkiPin string) {
	if w == nil {
		return
	}
	url := cfg.publicURL()
	fmt.Fprintf(w, "ggfleet %s is running (provider %s)\n", version.Version, cfg.Provider)
	fmt.Fprintf(w, "  API:          %s\n", url)
	fmt.Fprintf(w, "  MQTT:         %s (mutual TLS)\n", cfg.mqttEndpoint())
	tokenHere := tokenCreated
	if _, err := os.Stat(tokenPath); err == nil {
		tokenHere = true
	}
	switch {
	case tokenCreated:
		fmt.Fprintf(w, "  Admin token:  written to %s (0600; shown nowhere else)\n", tokenPath)
	case tokenHere:
		fmt.Fprintf(w, "  Admin token:  %s\n", tokenPath)
	default:
		// Another replica of the database created it (docs/scaling.md).
		fmt.Fprintf(w, "  Admin token:  not in this data dir: the first replica of this database wrote it to admin.token in its own data dir; it works on every replica\n")
		tokenPath = "admin.token"
	}
	fmt.Fprintf(w, "  Default CA:   %s\n", def.ID)
	if pin != "" {
		fmt.Fprintf(w, "  TLS:          certificate from the default CA; devices pin it with --ca-sha256 %s\n", pin)
	}
	if spkiPin != "" {
		fmt.Fprintf(w, "  Install:      on a device, with an enrollment token (POST /cores/NAME/enrollmentTokens):\n")
		fmt.Fprintf(w, "    curl -fsSL --pinnedpubkey 'sha256//%s' --cacert %s %s/install.sh | sudo sh -s -- --core NAME --token TOKEN\n",
			spkiPin, filepath.Join(cfg.DataDir, "ca.pem"), url)
		if cfg.DownloadsDir == "" {
			fmt.Fprintf(w, "    (start with --downloads-dir to serve the ggagent builds install.sh downloads)\n")
		}
	}
	fmt.Fprintf(w, "\nNext: provision a core\n")
	fmt.Fprintf(w, "  curl -s -H \"Authorization: Bearer $(cat %s)\" -H 'Content-Type: application/json' \\\n", tokenPath)
	fmt.Fprintf(w, "    -X POST %s/coreTasks -d '{\"type\":\"Create\",\"coreVersion\":\"2.12.0\",\"cores\":[{\"name\":\"core-1\",\"provisioningTemplate\":\"ggfleet-core\",\"provisioningParameters\":{\"ThingName\":\"core-1\"},\"configFileGenerator\":\"MANUAL_INSTALL\"}]}'\n", url)
}

// downloads configures what the API serves a fresh device: the builds in
// --downloads-dir and, with --tls-auto, the default CA for install.sh to
// trust and pin (with other TLS setups devices use their system roots).
func downloads(cfg Config, def ca.CA) httpapi.Downloads {
	d := httpapi.Downloads{Dir: cfg.DownloadsDir}
	if cfg.TLSAuto {
		d.CASHA256, d.CAPEM = def.ID, def.CertificatePem
	}
	return d
}

// installPin writes the default CA to <data-dir>/ca.pem (0644), for
// `curl --cacert`, and returns the base64 SHA-256 of the served leaf
// certificate's SubjectPublicKeyInfo, for `curl --pinnedpubkey sha256//…`,
// so that even the first download of install.sh is pinned.
func installPin(dataDir string, cert tls.Certificate, def ca.CA) (string, error) {
	if len(cert.Certificate) == 0 {
		return "", errors.New("the --tls-auto certificate is empty")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("parse the --tls-auto certificate: %w", err)
	}
	path := filepath.Join(dataDir, "ca.pem")
	if err := os.WriteFile(path, []byte(def.CertificatePem), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}
