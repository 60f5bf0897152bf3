// Package ggconfig generates the Greengrass nucleus installer config
// (installerConfig.yml) exactly as the CDF installer-config generators do
// (spec §10): MANUAL_INSTALL for a core that has its certificate, and
// FLEET_PROVISIONING for a core that claims one. The broker stores the YAML
// as an artifact and hands it to agents at enrollment; the agent passes it to
// the nucleus installer. Keys are emitted in the CDF order, and keys without
// a value are left out, so a diff against a CDF-made file is empty.
package ggconfig

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The generator aliases a core task's configFileGenerator may name.
const (
	ManualInstallAlias     = "MANUAL_INSTALL"
	FleetProvisioningAlias = "FLEET_PROVISIONING"
)

// Default device paths (CDF's DEVICE_* settings), matching the certs.zip
// layout unzipped into /greengrass/v2.
const (
	DefaultRootPath                       = "/greengrass/v2"
	DefaultCertificateFilePath            = "/greengrass/v2/cert.pem"
	DefaultPrivateKeyPath                 = "/greengrass/v2/private.key"
	DefaultRootCaPath                     = "/greengrass/v2/AmazonRootCA1.pem"
	DefaultClaimCertificatePath           = "/greengrass/v2/claim-certs/claim.pem.crt"
	DefaultClaimCertificatePrivateKeyPath = "/greengrass/v2/claim-certs/claim.private.pem.key"
)

// ErrUnknownGenerator is returned (wrapped) by Generate for an alias it does
// not know; the error's message is CDF's item failure text.
var ErrUnknownGenerator = errors.New("unrecognized generator alias")

// Params are the inputs of a generator: the core task's values (CoreName,
// Version, ProvisioningTemplate, TemplateParameters) and the deployment's
// settings. Empty strings are "undefined": their keys are omitted, except the
// paths, which take the defaults above.
type Params struct {
	CoreName             string            // the thing name (required)
	Version              string            // the nucleus version, coreTask.coreVersion (required)
	ProvisioningTemplate string            // required by FLEET_PROVISIONING
	TemplateParameters   map[string]string // FLEET_PROVISIONING's templateParameters

	AWSRegion               string
	IoTRoleAlias            string
	IoTDataEndpoint         string
	IoTCredEndpoint         string
	MQTTPort                int    // emitted as mqtt.port only when non-zero
	GreengrassDataPlanePort string // emitted as a quoted string only when set

	RootPath                       string
	CertificateFilePath            string
	PrivateKeyPath                 string
	RootCaPath                     string
	ClaimCertificatePath           string
	ClaimCertificatePrivateKeyPath string
}

// Aliases returns the generator aliases, sorted.
func Aliases() []string {
	return []string{FleetProvisioningAlias, ManualInstallAlias}
}

// Generate runs the generator named by alias. An unknown alias gives an
// error wrapping ErrUnknownGenerator whose message is exactly
// "Unrecognized generator alias: <alias>".
func Generate(alias string, p Params) (string, error) {
	switch alias {
	case ManualInstallAlias:
		return ManualInstall(p)
	case FleetProvisioningAlias:
		return FleetProvisioning(p)
	}
	return "", &unknownAliasError{alias: alias}
}

type unknownAliasError struct{ alias string }

func (e *unknownAliasError) Error() string { return "Unrecognized generator alias: " + e.alias }

func (e *unknownAliasError) Unwrap() error { return ErrUnknownGenerator }

// ManualInstall returns the MANUAL_INSTALL installer config (spec §10.1):
// system paths and thing name, and the nucleus with its endpoints.
// CoreName and Version are required.
func ManualInstall(p Params) (string, error) {
	if err := require(ManualInstallAlias, []field{{"coreName", p.CoreName}, {"version", p.Version}}); err != nil {
		return "", err
	}
	system := mapping(
		pair("certificateFilePath", str(or(p.CertificateFilePath, DefaultCertificateFilePath))),
		pair("privateKeyPath", str(or(p.PrivateKeyPath, DefaultPrivateKeyPath))),
		pair("rootCaPath", str(or(p.RootCaPath, DefaultRootCaPath))),
		pair("rootpath", str(or(p.RootPath, DefaultRootPath))), // lower-case, as CDF writes it
		pair("thingName", str(p.CoreName)),
	)
	conf := nucleusConfiguration(p)
	if p.MQTTPort != 0 {
		conf.Content = append(conf.Content, pair("mqtt", mapping(pair("port", integer(p.MQTTPort))))...)
	}
	if p.GreengrassDataPlanePort != "" {
		conf.Content = append(conf.Content, pair("greengrassDataPlanePort", quoted(p.GreengrassDataPlanePort))...)
	}
	doc := mapping(
		pair("system", system),
		pair("services", mapping(pair("aws.greengrass.Nucleus", nucleus(p, conf)))),
	)
	return encode(doc)
}

// FleetProvisioning returns the FLEET_PROVISIONING installer config (spec
// §10.2): the nucleus and the FleetProvisioningByClaim plugin's settings.
// CoreName, Version and ProvisioningTemplate are required.
func FleetProvisioning(p Params) (string, error) {
	if err := require(FleetProvisioningAlias, []field{{"coreName", p.CoreName}, {"version", p.Version}, {"provisioningTemplate", p.ProvisioningTemplate}}); err != nil {
		return "", err
	}
	claim := mapping(
		pair("rootPath", str(or(p.RootPath, DefaultRootPath))), // camel-case here, as CDF writes it
		optional("awsRegion", p.AWSRegion),
		optional("iotDataEndpoint", p.IoTDataEndpoint),
		optional("iotCredentialEndpoint", p.IoTCredEndpoint),
		optional("iotRoleAlias", p.IoTRoleAlias),
		pair("provisioningTemplate", str(p.ProvisioningTemplate)),
		pair("claimCertificatePath", str(or(p.ClaimCertificatePath, DefaultClaimCertificatePath))),
		pair("claimCertificatePrivateKeyPath", str(or(p.ClaimCertificatePrivateKeyPath, DefaultClaimCertificatePrivateKeyPath))),
		pair("rootCaPath", str(or(p.RootCaPath, DefaultRootCaPath))),
	)
	if len(p.TemplateParameters) > 0 {
		keys := make([]string, 0, len(p.TemplateParameters))
		for k := range p.TemplateParameters {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		params := mapping()
		for _, k := range keys {
			params.Content = append(params.Content, pair(k, str(p.TemplateParameters[k]))...)
		}
		claim.Content = append(claim.Content, pair("templateParameters", params)...)
	}
	doc := mapping(
		pair("services", mapping(
			pair("aws.greengrass.Nucleus", nucleus(p, nucleusConfiguration(p))),
			pair("aws.greengrass.FleetProvisioningByClaim", mapping(pair("configuration", claim))),
		)),
	)
	return encode(doc)
}

// nucleus is the aws.greengrass.Nucleus service block.
func nucleus(p Params, conf *yaml.Node) *yaml.Node {
	return mapping(
		pair("componentType", str("NUCLEUS")),
		pair("version", str(p.Version)),
		pair("configuration", conf),
	)
}

// nucleusConfiguration is the nucleus configuration both generators share.
func nucleusConfiguration(p Params) *yaml.Node {
	return mapping(
		optional("awsRegion", p.AWSRegion),
		optional("iotRoleAlias", p.IoTRoleAlias),
		optional("iotDataEndpoint", p.IoTDataEndpoint),
		optional("iotCredEndpoint", p.IoTCredEndpoint),
	)
}

type field struct{ name, value string }

// require returns an error naming every missing required input.
func require(alias string, fields []field) error {
	var missing []string
	for _, f := range fields {
		if strings.TrimSpace(f.value) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s installer config: missing required %s", alias, strings.Join(missing, ", "))
	}
	return nil
}

// encode writes the document with the leading "---" marker and two-space indentation.
func encode(doc *yaml.Node) (string, error) {
	var buf bytes.Buffer
	buf.WriteString("---\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return "", fmt.Errorf("encode installer config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("encode installer config: %w", err)
	}
	return buf.String(), nil
}

// mapping builds an ordered mapping from key/value node pairs.
func mapping(pairs ...[]*yaml.Node) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, p := range pairs {
		m.Content = append(m.Content, p...)
	}
	return m
}

func pair(key string, value *yaml.Node) []*yaml.Node {
	return []*yaml.Node{str(key), value}
}

// optional is a pair, or nothing when the value is undefined.
func optional(key, value string) []*yaml.Node {
	if value == "" {
		return nil
	}
	return pair(key, str(value))
}

// str is a string scalar. The encoder quotes it when a YAML 1.2 reader would
// read it back as another type ("443", "2.0", "true"); it is also quoted
// when it is one of YAML 1.1's boolean words ("yes", "off"), because the
// nucleus reads its config with a YAML 1.1 parser.
func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off":
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// quoted is a string scalar that is always double-quoted.
func quoted(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func integer(n int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
