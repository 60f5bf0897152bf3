package provisioning

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// Resource types a template may declare (AWS IoT RegisterThing's set).
const (
	typeThing       = "AWS::IoT::Thing"
	typeCertificate = "AWS::IoT::Certificate"
	typePolicy      = "AWS::IoT::Policy"
)

// Parameter types a template may declare.
var parameterTypes = map[string]bool{
	"String": true, "Number": true, "List<String>": true, "CommaDelimitedList": true,
}

// Parameters the CDF section injects, and the options that inject each.
var injectedBy = map[string][]string{
	"CertificatePem":   {"createDeviceCertificate", "createDeviceAWSCertificate"},
	"CaCertificatePem": {"createDeviceCertificate"},
	"CertificateId":    {"registerDeviceCertificateWithoutCA", "createDeviceAWSCertificate"},
	"CertificateArn":   {"registerDeviceCertificateWithoutCA", "createDeviceAWSCertificate"},
}

// Pseudo parameters a Ref may name besides the declared parameters.
var pseudoParameters = map[string]bool{"AWS::Region": true, "AWS::AccountId": true, "AWS::Partition": true}

// document is a parsed, shape-checked provisioning template.
type document struct {
	Parameters map[string]parameter
	Resources  map[string]resource
	Logical    []string // resource logical ids, sorted
	CDF        cdfSection
	// Conditions are the named conditions Fn::If refers to, unevaluated.
	Conditions map[string]any
}

// parameter is one entry of the template's Parameters.
type parameter struct {
	Type       string
	Default    any
	HasDefault bool
}

// resource is one entry of the template's Resources, properties unevaluated.
type resource struct {
	Type       string
	Properties map[string]any
	Override   map[string]any // OverrideSettings, as written
}

// cdfSection is the template's CDF extension.
type cdfSection struct {
	CreateDeviceCertificate            bool
	CreateDeviceAWSCertificate         bool
	RegisterDeviceCertificateWithoutCA bool
	AttachAdditionalPolicies           []additionalPolicy
}

// makesCertificate reports whether a CDF pre-step provides the certificate.
func (c cdfSection) makesCertificate() bool {
	return c.CreateDeviceCertificate || c.CreateDeviceAWSCertificate || c.RegisterDeviceCertificateWithoutCA
}

// additionalPolicy is one entry of CDF.attachAdditionalPolicies.
type additionalPolicy struct {
	Name     string
	Document string // "" to attach an existing policy
}

func invalid(format string, args ...any) error {
	return errkind.New(errkind.Invalid, format, args...)
}

// parseTemplate parses a template document and checks its shape: a JSON
// object with known sections, well-formed Parameters, known resource types
// with well-formed intrinsic functions, and a well-formed CDF section. The
// errors are errkind.Invalid with a message saying what to fix.
func parseTemplate(doc []byte) (*document, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("the provisioning template is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("the provisioning template has data after its JSON object")
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, invalid("the provisioning template must be a JSON object with Parameters, Resources and an optional CDF section")
	}
	for k := range top {
		switch k {
		case "Parameters", "Conditions", "Resources", "CDF", "Description", "AWSTemplateFormatVersion", "Metadata":
		default:
			return nil, invalid("the provisioning template has an unsupported top-level section %q: use Parameters, Conditions, Resources, CDF and Description", k)
		}
	}
	d := &document{Parameters: map[string]parameter{}, Resources: map[string]resource{}}
	if err := d.parseParameters(top["Parameters"]); err != nil {
		return nil, err
	}
	if err := d.parseConditions(top["Conditions"]); err != nil {
		return nil, err
	}
	if err := d.parseCDF(top["CDF"]); err != nil {
		return nil, err
	}
	if err := d.parseResources(top["Resources"]); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *document) parseParameters(v any) error {
	if v == nil {
		return nil
	}
	params, ok := v.(map[string]any)
	if !ok {
		return invalid("Parameters must be an object of {\"<name>\": {\"Type\": \"String\"}}")
	}
	for name, pv := range params {
		if name == "" {
			return invalid("Parameters has an empty parameter name")
		}
		p, ok := pv.(map[string]any)
		if !ok {
			return invalid("parameter %q must be an object with a Type", name)
		}
		typ, _ := p["Type"].(string)
		if !parameterTypes[typ] {
			return invalid("parameter %q has Type %s: use String, Number, List<String> or CommaDelimitedList", name, describe(p["Type"]))
		}
		def, has := p["Default"]
		if has {
			if _, err := convertDefault(name, typ, def); err != nil {
				return err
			}
		}
		d.Parameters[name] = parameter{Type: typ, Default: def, HasDefault: has}
	}
	return nil
}

// parseConditions reads the Conditions section and checks each condition's
// form (with placeholder parameter values).
func (d *document) parseConditions(v any) error {
	d.Conditions = map[string]any{}
	if v == nil {
		return nil
	}
	conds, ok := v.(map[string]any)
	if !ok {
		return invalid("Conditions must be an object of {\"<name>\": {\"Fn::Equals\": [...]}}")
	}
	for name, c := range conds {
		d.Conditions[name] = c
	}
	e := &evaluator{doc: d, check: true}
	for name := range conds {
		if _, err := e.condition(name, 0); err != nil {
			return err
		}
	}
	return nil
}

func (d *document) parseCDF(v any) error {
	if v == nil {
		return nil
	}
	c, ok := v.(map[string]any)
	if !ok {
		return invalid("CDF must be an object, for example {\"createDeviceCertificate\": true}")
	}
	flag := func(key string) (bool, error) {
		fv, present := c[key]
		if !present {
			return false, nil
		}
		b, ok := fv.(bool)
		if !ok {
			return false, invalid("CDF.%s must be true or false", key)
		}
		return b, nil
	}
	var err error
	for key := range c {
		switch key {
		case "createDeviceCertificate":
			d.CDF.CreateDeviceCertificate, err = flag(key)
		case "createDeviceAWSCertificate":
			d.CDF.CreateDeviceAWSCertificate, err = flag(key)
		case "registerDeviceCertificateWithoutCA":
			d.CDF.RegisterDeviceCertificateWithoutCA, err = flag(key)
		case "clientIdMustMatchThingName":
			_, err = flag(key) // deprecated in CDF; accepted and ignored
		case "attachAdditionalPolicies":
			d.CDF.AttachAdditionalPolicies, err = parseAdditionalPolicies(c[key])
		case "acmpca":
			err = invalid("CDF.%s is not supported by ggfleet: use CDF.createDeviceCertificate (the broker's CA issues the certificate), CDF.createDeviceAWSCertificate (AWS IoT makes key and certificate) or a CertificateSigningRequest", key)
		default:
			err = invalid("CDF has an unknown option %q: use createDeviceCertificate, createDeviceAWSCertificate, registerDeviceCertificateWithoutCA or attachAdditionalPolicies", key)
		}
		if err != nil {
			return err
		}
	}
	if d.CDF.CreateDeviceAWSCertificate && (d.CDF.CreateDeviceCertificate || d.CDF.RegisterDeviceCertificateWithoutCA) {
		return invalid("CDF.createDeviceAWSCertificate cannot be combined with createDeviceCertificate or registerDeviceCertificateWithoutCA: choose who makes the device certificate")
	}
	return nil
}

func parseAdditionalPolicies(v any) ([]additionalPolicy, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, invalid("CDF.attachAdditionalPolicies must be an array of {\"name\": \"<policy>\", \"document\": {...}}")
	}
	var out []additionalPolicy
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, invalid("CDF.attachAdditionalPolicies[%d] must be an object with a name", i)
		}
		name, _ := m["name"].(string)
		if !policyNameRE.MatchString(name) {
			return nil, invalid("CDF.attachAdditionalPolicies[%d].name must be a policy name of 1 to 128 characters from a-z, A-Z, 0-9 and _+=,.@-", i)
		}
		p := additionalPolicy{Name: name}
		if doc, has := m["document"]; has && doc != nil {
			s, err := policyDocument(doc)
			if err != nil {
				return nil, invalid("CDF.attachAdditionalPolicies[%d].document: %s", i, errkind.Message(err))
			}
			p.Document = s
		}
		out = append(out, p)
	}
	return out, nil
}

// policyDocument normalises a policy document given as an object or as a
// JSON string holding an object.
func policyDocument(v any) (string, error) {
	switch t := v.(type) {
	case string:
		var m map[string]any
		if err := json.Unmarshal([]byte(t), &m); err != nil || m == nil {
			return "", invalid("a policy document must be a JSON object (or a string holding one)")
		}
		return t, nil
	case map[string]any:
		b, err := json.Marshal(t)
		if err != nil {
			return "", invalid("the policy document cannot be encoded: %v", err)
		}
		return string(b), nil
	}
	return "", invalid("a policy document must be a JSON object (or a string holding one), not %s", describe(v))
}

func (d *document) parseResources(v any) error {
	res, ok := v.(map[string]any)
	if !ok || len(res) == 0 {
		return invalid("Resources must be an object naming at least an AWS::IoT::Thing resource")
	}
	counts := map[string]int{}
	for logical, rv := range res {
		r, ok := rv.(map[string]any)
		if !ok {
			return invalid("resource %q must be an object with Type and Properties", logical)
		}
		typ, _ := r["Type"].(string)
		switch typ {
		case typeThing, typeCertificate, typePolicy:
		default:
			return invalid("resource %q has Type %s: use AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy", logical, describe(r["Type"]))
		}
		counts[typ]++
		for k := range r {
			switch k {
			case "Type", "Properties", "OverrideSettings", "Description", "Metadata":
			default:
				return invalid("resource %q has an unsupported key %q: use Type, Properties and OverrideSettings", logical, k)
			}
		}
		var override map[string]any
		if os, has := r["OverrideSettings"]; has {
			if override, ok = os.(map[string]any); !ok {
				return invalid("resource %q: OverrideSettings must be an object", logical)
			}
		}
		props := map[string]any{}
		if pv, has := r["Properties"]; has {
			if props, ok = pv.(map[string]any); !ok {
				return invalid("resource %q: Properties must be an object", logical)
			}
		}
		d.Resources[logical] = resource{Type: typ, Properties: props, Override: override}
		d.Logical = append(d.Logical, logical)
	}
	sort.Strings(d.Logical)
	if counts[typeThing] != 1 {
		return invalid("the template must have exactly one AWS::IoT::Thing resource, it has %d", counts[typeThing])
	}
	if counts[typeCertificate] > 1 {
		return invalid("the template may have at most one AWS::IoT::Certificate resource, it has %d", counts[typeCertificate])
	}
	if counts[typePolicy] > 0 && counts[typeCertificate] == 0 && !d.CDF.makesCertificate() {
		return invalid("an AWS::IoT::Policy resource needs an AWS::IoT::Certificate resource to attach to")
	}
	// Evaluate every resource with placeholder parameter values: this checks
	// each intrinsic function's form and that every Ref names a parameter.
	e := &evaluator{doc: d, check: true}
	for _, logical := range d.Logical {
		r := d.Resources[logical]
		props, err := e.evalProps(logical, r.Properties)
		if err != nil {
			return err
		}
		if _, err := interpret(logical, r.Type, props); err != nil {
			return err
		}
	}
	return nil
}

// convertDefault checks a parameter's Default against its type and returns
// the value a Ref yields.
func convertDefault(name, typ string, def any) (any, error) {
	switch typ {
	case "String":
		if s, ok := scalarString(def); ok {
			return s, nil
		}
	case "Number":
		if s, ok := scalarString(def); ok {
			if _, err := strconv.ParseFloat(s, 64); err == nil {
				return json.Number(s), nil
			}
		}
	default: // list types
		if s, ok := def.(string); ok {
			return splitList(s), nil
		}
		if l, ok := def.([]any); ok {
			out := make([]string, 0, len(l))
			for _, e := range l {
				s, ok := scalarString(e)
				if !ok {
					return nil, invalid("parameter %q: Default must be a list of strings", name)
				}
				out = append(out, s)
			}
			return out, nil
		}
	}
	return nil, invalid("parameter %q: Default %s does not fit Type %s", name, describe(def), typ)
}

// splitList splits a comma-delimited list value, trimming spaces.
func splitList(s string) []string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// scalarString renders a JSON scalar (string, number, bool) as a string.
func scalarString(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

// describe names a JSON value's kind for error messages.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null (missing)"
	case string:
		return strconv.Quote(t)
	case json.Number:
		return t.String()
	case bool:
		return strconv.FormatBool(t)
	case []any, []string:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
