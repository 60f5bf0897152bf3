package ggconfig

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// full sets every input a deployment can give.
var full = Params{
	CoreName:                "core-1",
	Version:                 "2.5.0",
	ProvisioningTemplate:    "ggfleet-fleet-template",
	TemplateParameters:      map[string]string{"ThingName": "core-1", "Enabled": "yes", "Site": "plant 7"},
	AWSRegion:               "eu-west-1",
	IoTRoleAlias:            "GreengrassV2TokenExchangeRoleAlias",
	IoTDataEndpoint:         "abc123-ats.iot.eu-west-1.amazonaws.com",
	IoTCredEndpoint:         "xyz789.credentials.iot.eu-west-1.amazonaws.com",
	MQTTPort:                8883,
	GreengrassDataPlanePort: "8443",
}

var minimal = Params{CoreName: "core-1", Version: "2.5.0", ProvisioningTemplate: "tmpl"}

var customPaths = Params{
	CoreName:                       "edge_gw-02",
	Version:                        "2.10",
	ProvisioningTemplate:           "tmpl",
	AWSRegion:                      "us-east-1",
	IoTDataEndpoint:                "broker.internal.example.com:8883 with a very long suffix that is longer than eighty columns in total",
	RootPath:                       "/opt/greengrass/v2",
	CertificateFilePath:            "/opt/greengrass/v2/device.pem.crt",
	PrivateKeyPath:                 "/opt/greengrass/v2/device.key",
	RootCaPath:                     "/opt/greengrass/v2/ca.pem",
	ClaimCertificatePath:           "/opt/claim/claim.crt",
	ClaimCertificatePrivateKeyPath: "/opt/claim/claim.key",
	GreengrassDataPlanePort:        "443",
}

var cases = []struct {
	name   string
	alias  string
	params Params
}{
	{"manual_install_full", ManualInstallAlias, full},
	{"manual_install_minimal", ManualInstallAlias, minimal},
	{"manual_install_custom_paths", ManualInstallAlias, customPaths},
	{"fleet_provisioning_full", FleetProvisioningAlias, full},
	{"fleet_provisioning_minimal", FleetProvisioningAlias, minimal},
	{"fleet_provisioning_custom_paths", FleetProvisioningAlias, customPaths},
}

func TestGolden(t *testing.T) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Generate(tt.alias, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", tt.name, path, got, want)
			}
			if !strings.HasPrefix(got, "---\n") {
				t.Error("the config does not start with the --- marker")
			}
		})
	}
}

// TestKeyByKey parses each config and checks every key path, in document
// order, with its YAML tag and value.
func TestKeyByKey(t *testing.T) {
	const nucleus = "services/aws.greengrass.Nucleus"
	const claim = "services/aws.greengrass.FleetProvisioningByClaim/configuration"
	tests := []struct {
		name   string
		alias  string
		params Params
		want   []string
	}{
		{
			name: "manual install, every input", alias: ManualInstallAlias, params: full,
			want: []string{
				"system/certificateFilePath !!str /greengrass/v2/cert.pem",
				"system/privateKeyPath !!str /greengrass/v2/private.key",
				"system/rootCaPath !!str /greengrass/v2/AmazonRootCA1.pem",
				"system/rootpath !!str /greengrass/v2",
				"system/thingName !!str core-1",
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.5.0",
				nucleus + "/configuration/awsRegion !!str eu-west-1",
				nucleus + "/configuration/iotRoleAlias !!str GreengrassV2TokenExchangeRoleAlias",
				nucleus + "/configuration/iotDataEndpoint !!str abc123-ats.iot.eu-west-1.amazonaws.com",
				nucleus + "/configuration/iotCredEndpoint !!str xyz789.credentials.iot.eu-west-1.amazonaws.com",
				nucleus + "/configuration/mqtt/port !!int 8883",
				nucleus + "/configuration/greengrassDataPlanePort !!str 8443",
			},
		},
		{
			name: "manual install, required inputs only", alias: ManualInstallAlias, params: minimal,
			want: []string{
				"system/certificateFilePath !!str /greengrass/v2/cert.pem",
				"system/privateKeyPath !!str /greengrass/v2/private.key",
				"system/rootCaPath !!str /greengrass/v2/AmazonRootCA1.pem",
				"system/rootpath !!str /greengrass/v2",
				"system/thingName !!str core-1",
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.5.0",
				nucleus + "/configuration {}",
			},
		},
		{
			name: "manual install, custom paths", alias: ManualInstallAlias, params: customPaths,
			want: []string{
				"system/certificateFilePath !!str /opt/greengrass/v2/device.pem.crt",
				"system/privateKeyPath !!str /opt/greengrass/v2/device.key",
				"system/rootCaPath !!str /opt/greengrass/v2/ca.pem",
				"system/rootpath !!str /opt/greengrass/v2",
				"system/thingName !!str edge_gw-02",
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.10",
				nucleus + "/configuration/awsRegion !!str us-east-1",
				nucleus + "/configuration/iotDataEndpoint !!str " + customPaths.IoTDataEndpoint,
				nucleus + "/configuration/greengrassDataPlanePort !!str 443",
			},
		},
		{
			name: "fleet provisioning, every input", alias: FleetProvisioningAlias, params: full,
			want: []string{
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.5.0",
				nucleus + "/configuration/awsRegion !!str eu-west-1",
				nucleus + "/configuration/iotRoleAlias !!str GreengrassV2TokenExchangeRoleAlias",
				nucleus + "/configuration/iotDataEndpoint !!str abc123-ats.iot.eu-west-1.amazonaws.com",
				nucleus + "/configuration/iotCredEndpoint !!str xyz789.credentials.iot.eu-west-1.amazonaws.com",
				claim + "/rootPath !!str /greengrass/v2",
				claim + "/awsRegion !!str eu-west-1",
				claim + "/iotDataEndpoint !!str abc123-ats.iot.eu-west-1.amazonaws.com",
				claim + "/iotCredentialEndpoint !!str xyz789.credentials.iot.eu-west-1.amazonaws.com",
				claim + "/iotRoleAlias !!str GreengrassV2TokenExchangeRoleAlias",
				claim + "/provisioningTemplate !!str ggfleet-fleet-template",
				claim + "/claimCertificatePath !!str /greengrass/v2/claim-certs/claim.pem.crt",
				claim + "/claimCertificatePrivateKeyPath !!str /greengrass/v2/claim-certs/claim.private.pem.key",
				claim + "/rootCaPath !!str /greengrass/v2/AmazonRootCA1.pem",
				claim + "/templateParameters/Enabled !!str yes",
				claim + "/templateParameters/Site !!str plant 7",
				claim + "/templateParameters/ThingName !!str core-1",
			},
		},
		{
			name: "fleet provisioning, required inputs only", alias: FleetProvisioningAlias, params: minimal,
			want: []string{
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.5.0",
				nucleus + "/configuration {}",
				claim + "/rootPath !!str /greengrass/v2",
				claim + "/provisioningTemplate !!str tmpl",
				claim + "/claimCertificatePath !!str /greengrass/v2/claim-certs/claim.pem.crt",
				claim + "/claimCertificatePrivateKeyPath !!str /greengrass/v2/claim-certs/claim.private.pem.key",
				claim + "/rootCaPath !!str /greengrass/v2/AmazonRootCA1.pem",
			},
		},
		{
			name: "fleet provisioning, custom paths", alias: FleetProvisioningAlias, params: customPaths,
			want: []string{
				nucleus + "/componentType !!str NUCLEUS",
				nucleus + "/version !!str 2.10",
				nucleus + "/configuration/awsRegion !!str us-east-1",
				nucleus + "/configuration/iotDataEndpoint !!str " + customPaths.IoTDataEndpoint,
				claim + "/rootPath !!str /opt/greengrass/v2",
				claim + "/awsRegion !!str us-east-1",
				claim + "/iotDataEndpoint !!str " + customPaths.IoTDataEndpoint,
				claim + "/provisioningTemplate !!str tmpl",
				claim + "/claimCertificatePath !!str /opt/claim/claim.crt",
				claim + "/claimCertificatePrivateKeyPath !!str /opt/claim/claim.key",
				claim + "/rootCaPath !!str /opt/greengrass/v2/ca.pem",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Generate(tt.alias, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			got := flatten(t, out)
			for i := 0; i < len(got) || i < len(tt.want); i++ {
				var g, w string
				if i < len(got) {
					g = got[i]
				}
				if i < len(tt.want) {
					w = tt.want[i]
				}
				if g != w {
					t.Errorf("key %d:\n got %q\nwant %q", i, g, w)
				}
			}
		})
	}
}

// flatten parses YAML (with a YAML 1.2 reader, as the spec's tests do) and
// lists its leaves as "path tag value", in document order.
func flatten(t *testing.T, text string) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("the config is not YAML: %v\n%s", err, text)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		t.Fatalf("want one YAML document, got %v", doc.Kind)
	}
	var out []string
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		switch n.Kind {
		case yaml.MappingNode:
			if len(n.Content) == 0 {
				out = append(out, path+" {}")
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(strings.TrimPrefix(path+"/"+n.Content[i].Value, "/"), n.Content[i+1])
			}
		case yaml.ScalarNode:
			out = append(out, path+" "+n.Tag+" "+n.Value)
		default:
			t.Fatalf("unexpected YAML node kind %v at %s", n.Kind, path)
		}
	}
	walk("", doc.Content[0])
	return out
}

// TestYAML11Safety checks that strings a YAML 1.1 reader (the nucleus's)
// would take for numbers or booleans are quoted.
func TestYAML11Safety(t *testing.T) {
	p := full
	p.Version = "2.10"
	p.TemplateParameters = map[string]string{"a": "yes", "b": "Off", "c": "123", "d": "true", "e": "plain"}
	out, err := FleetProvisioning(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`version: "2.10"`, `a: "yes"`, `b: "Off"`, `c: "123"`, `d: "true"`, `e: plain`} {
		if !strings.Contains(out, want) {
			t.Errorf("config lacks %q:\n%s", want, out)
		}
	}
	manual, err := ManualInstall(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(manual, `greengrassDataPlanePort: "8443"`) || !strings.Contains(manual, "port: 8883\n") {
		t.Errorf("ports are not emitted as the spec says:\n%s", manual)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		alias   string
		params  Params
		wantErr string
	}{
		{"manual without anything", ManualInstallAlias, Params{}, "MANUAL_INSTALL installer config: missing required coreName, version"},
		{"manual without version", ManualInstallAlias, Params{CoreName: "c"}, "missing required version"},
		{"manual with a blank name", ManualInstallAlias, Params{CoreName: "  ", Version: "2.5.0"}, "missing required coreName"},
		{"fleet without template", FleetProvisioningAlias, Params{CoreName: "c", Version: "2.5.0"}, "FLEET_PROVISIONING installer config: missing required provisioningTemplate"},
		{"fleet without anything", FleetProvisioningAlias, Params{}, "missing required coreName, version, provisioningTemplate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Generate(tt.alias, tt.params)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrUnknownGenerator) {
				t.Fatal("a missing input is reported as an unknown generator")
			}
		})
	}
	t.Run("unknown alias", func(t *testing.T) {
		for _, alias := range []string{"CUSTOM", "", "manual_install"} {
			_, err := Generate(alias, full)
			if err == nil || err.Error() != "Unrecognized generator alias: "+alias {
				t.Errorf("Generate(%q) = %v", alias, err)
			}
			if !errors.Is(err, ErrUnknownGenerator) {
				t.Errorf("Generate(%q) error does not wrap ErrUnknownGenerator", alias)
			}
		}
	})
}

func TestAliasesDispatch(t *testing.T) {
	aliases := Aliases()
	if strings.Join(aliases, ",") != "FLEET_PROVISIONING,MANUAL_INSTALL" {
		t.Fatalf("Aliases = %v", aliases)
	}
	direct := map[string]func(Params) (string, error){ManualInstallAlias: ManualInstall, FleetProvisioningAlias: FleetProvisioning}
	for _, alias := range aliases {
		viaAlias, err1 := Generate(alias, full)
		viaFunc, err2 := direct[alias](full)
		if err1 != nil || err2 != nil || viaAlias != viaFunc {
			t.Errorf("Generate(%q) differs from its function: %v %v", alias, err1, err2)
		}
	}
	// The two generators differ where the spec says they do.
	manual, _ := ManualInstall(full)
	fleet, _ := FleetProvisioning(full)
	if strings.Contains(fleet, "system:") || strings.Contains(fleet, "mqtt:") || strings.Contains(fleet, "greengrassDataPlanePort") {
		t.Errorf("FLEET_PROVISIONING has a system section or port keys:\n%s", fleet)
	}
	if strings.Contains(manual, "FleetProvisioningByClaim") {
		t.Errorf("MANUAL_INSTALL has the fleet provisioning plugin:\n%s", manual)
	}
}
