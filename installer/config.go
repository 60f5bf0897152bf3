package installer

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// InitConfig turns the broker's installer config (installerConfig.yml) into
// the nucleus's --init-config: system.rootpath is root and the
// certificate, key and CA paths point at the copies the installer placed
// there (cert.pem, private.key, rootCA.pem). Everything else is kept as
// the broker wrote it, in its order.
func InitConfig(installerConfig []byte, root string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(installerConfig, &doc); err != nil {
		return nil, fmt.Errorf("the broker's installer config is not YAML: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the broker's installer config is not a YAML mapping")
	}
	system := child(doc.Content[0], "system")
	if system == nil {
		system = &yaml.Node{Kind: yaml.MappingNode}
		doc.Content[0].Content = append([]*yaml.Node{{Kind: yaml.ScalarNode, Value: "system"}, system}, doc.Content[0].Content...)
	}
	if system.Kind != yaml.MappingNode {
		return nil, errors.New("the broker's installer config: system is not a mapping")
	}
	set(system, "certificateFilePath", filepath.Join(root, nucleusCertFile))
	set(system, "privateKeyPath", filepath.Join(root, nucleusKeyFile))
	set(system, "rootCaPath", filepath.Join(root, nucleusCAFile))
	set(system, "rootpath", root)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode the init config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func set(m *yaml.Node, key, value string) {
	if v := child(m, key); v != nil {
		*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// ---- the CDF way: certs.zip + installer config ----

// maxArtifact bounds certs.zip and the installer config.
const maxArtifact = 1 << 20

func importStep() Step {
	return Step{
		Name:  "import",
		Title: "install the core's certificates (CDF certs.zip)",
		Describe: func(e *Env) string {
			return fmt.Sprintf("read %s (certs/cert.pem, certs/private.key, certs/root.ca.pem) and %s, check the key matches the certificate and the CA pin, and write them as the identity in %s",
				e.Options.CertsZip, e.Options.InstallerConfig, e.Options.StateDir)
		},
		Done: func(_ context.Context, e *Env) (bool, error) {
			id, ok := loadIdentity(e)
			if !ok {
				return false, nil
			}
			a, err := readCDF(e.Options)
			if err != nil {
				return false, err
			}
			return id.ThingName == a.thing, nil
		},
		Run: func(_ context.Context, e *Env) error {
			if err := e.openStateDir(); err != nil {
				return err
			}
			a, err := readCDF(e.Options)
			if err != nil {
				return err
			}
			if id, err := identity.Load(e.dir); err == nil && id.ThingName != a.thing {
				return fmt.Errorf("the state directory %s already holds the identity of core %q, not %q: use another --state-dir, or uninstall with --purge first", e.dir.Path(), id.ThingName, a.thing)
			}
			files := []struct {
				name string
				data []byte
				mode os.FileMode
			}{
				{statedir.KeyFile, a.key, statedir.SecretMode},
				{statedir.CertFile, a.cert, statedir.PublicMode},
				{statedir.CAFile, a.ca, statedir.PublicMode},
				{statedir.ServerCAFile, a.ca, statedir.PublicMode},
				{statedir.InstallerConfigFile, a.config, statedir.PublicMode},
			}
			for _, f := range files {
				if err := e.dir.WriteFile(f.name, f.data, f.mode); err != nil {
					return err
				}
			}
			id := identity.Identity{
				Version: 1, ThingName: a.thing, BrokerURL: strings.TrimSuffix(strings.TrimSpace(e.Options.BrokerURL), "/"),
				MQTTEndpoint: a.endpoint, Mode: a.mode, CASHA256: a.caSHA256, EnrolledAt: e.Now().UTC().Truncate(time.Second),
			}
			if id.Mode == "" {
				id.Mode = e.Options.Mode
			}
			return e.dir.WriteJSON(statedir.IdentityFile, id) // last: it says "enrolled"
		},
	}
}

// cdfArtifacts is what certs.zip and the installer config give.
type cdfArtifacts struct {
	thing, endpoint, mode, caSHA256 string
	cert, key, ca, config           []byte
}

// readCDF reads and checks the CDF artifacts.
func readCDF(o Options) (cdfArtifacts, error) {
	var a cdfArtifacts
	zb, err := readSmall(o.CertsZip)
	if err != nil {
		return a, fmt.Errorf("--certs-zip: %w", err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		return a, fmt.Errorf("--certs-zip %s is not a zip archive: %w", o.CertsZip, err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		r, err := f.Open()
		if err != nil {
			return a, fmt.Errorf("--certs-zip %s: %w", o.CertsZip, err)
		}
		b, err := io.ReadAll(io.LimitReader(r, maxArtifact))
		r.Close()
		if err != nil {
			return a, fmt.Errorf("--certs-zip %s: %s: %w", o.CertsZip, f.Name, err)
		}
		files[f.Name] = b
	}
	a.cert, a.key, a.ca = files["certs/cert.pem"], files["certs/private.key"], files["certs/root.ca.pem"]
	switch {
	case a.cert == nil:
		return a, fmt.Errorf("--certs-zip %s has no certs/cert.pem: download the core's certs.zip from its artifacts", o.CertsZip)
	case a.key == nil:
		return a, fmt.Errorf("--certs-zip %s has no certs/private.key: the core was provisioned with a key the broker did not make; enroll with --core and --token instead", o.CertsZip)
	case a.ca == nil:
		return a, fmt.Errorf("--certs-zip %s has no certs/root.ca.pem: the issuing CA is unknown; enroll with --core and --token instead", o.CertsZip)
	}
	if _, err := tls.X509KeyPair(a.cert, a.key); err != nil {
		return a, fmt.Errorf("--certs-zip %s: certs/private.key does not belong to certs/cert.pem: %w", o.CertsZip, err)
	}
	cert, err := certs.ParseCertificate(string(a.cert))
	if err != nil {
		return a, fmt.Errorf("--certs-zip %s: certs/cert.pem: %w", o.CertsZip, err)
	}
	ca, err := certs.ParseCertificate(string(a.ca))
	if err != nil {
		return a, fmt.Errorf("--certs-zip %s: certs/root.ca.pem: %w", o.CertsZip, err)
	}
	sum := sha256.Sum256(ca.Raw)
	a.caSHA256 = hex.EncodeToString(sum[:])
	if o.CASHA256 != "" {
		pin, err := apiclient.ParseSHA256(o.CASHA256)
		if err != nil {
			return a, fmt.Errorf("--ca-sha256: %w", err)
		}
		if hex.EncodeToString(pin) != a.caSHA256 {
			return a, fmt.Errorf("wrong CA pin: certs/root.ca.pem has SHA-256 %s, not the --ca-sha256 %s: check the pin (caId in GET /certificateAuthorities) and that the certs.zip is from this broker", a.caSHA256, o.CASHA256)
		}
	}
	a.thing = cert.Subject.CommonName

	a.config, err = readSmall(o.InstallerConfig)
	if err != nil {
		return a, fmt.Errorf("--installer-config: %w", err)
	}
	var conf struct {
		System struct {
			ThingName string `yaml:"thingName"`
		} `yaml:"system"`
		Services struct {
			Nucleus struct {
				Configuration struct {
					IoTDataEndpoint string `yaml:"iotDataEndpoint"`
					MQTT            struct {
						Port int `yaml:"port"`
					} `yaml:"mqtt"`
				} `yaml:"configuration"`
			} `yaml:"aws.greengrass.Nucleus"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(a.config, &conf); err != nil {
		return a, fmt.Errorf("--installer-config %s is not YAML: %w", o.InstallerConfig, err)
	}
	if conf.System.ThingName != a.thing {
		return a, fmt.Errorf("--installer-config %s is for thing %q but certs/cert.pem is for %q: use the two artifacts of the same core", o.InstallerConfig, conf.System.ThingName, a.thing)
	}
	host := conf.Services.Nucleus.Configuration.IoTDataEndpoint
	if host == "" {
		return a, fmt.Errorf("--installer-config %s has no services.aws.greengrass.Nucleus.configuration.iotDataEndpoint: the agent cannot know the MQTT endpoint", o.InstallerConfig)
	}
	port := conf.Services.Nucleus.Configuration.MQTT.Port
	if port == 0 {
		port = 8883
	}
	a.endpoint = net.JoinHostPort(host, strconv.Itoa(port))
	a.mode = o.Mode
	if a.mode == "" {
		a.mode = identity.ModeLocal
		if strings.HasSuffix(strings.ToLower(host), ".amazonaws.com") {
			a.mode = identity.ModeAWS
		}
	}
	return a, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxArtifact+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxArtifact {
		return nil, fmt.Errorf("%s is over %d bytes", path, maxArtifact)
	}
	return b, nil
}
