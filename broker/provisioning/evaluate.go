package provisioning

import (
	"encoding/json"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// Evaluated is a provisioning template's resources with every intrinsic
// function resolved, as RegisterThing would apply them.
type Evaluated struct {
	Thing       EvaluatedThing
	Certificate *EvaluatedCertificate // nil when the template has none
	Policies    []EvaluatedPolicy     // sorted by logical id
	// HasCDF reports a CDF section, which AWS's RegisterThing does not know.
	HasCDF bool
}

// EvaluatedThing is the template's AWS::IoT::Thing resource.
type EvaluatedThing struct {
	Name       string
	ThingType  string
	Attributes map[string]string
	Groups     []string
	// Override is the resource's OverrideSettings (property → DO_NOTHING |
	// REPLACE | MERGE | FAIL), as written.
	Override map[string]string
}

// EvaluatedCertificate is the template's AWS::IoT::Certificate resource:
// exactly one of ID, PEM and CSR is set.
type EvaluatedCertificate struct {
	ID, PEM, CAPEM, CSR string
	Status              string // ACTIVE unless the template says INACTIVE
	Override            map[string]string
}

// EvaluatedPolicy is one AWS::IoT::Policy resource.
type EvaluatedPolicy struct {
	Logical  string
	Name     string // "" when the template gives only a document
	Document string // "" to attach an existing policy
}

// EvaluateTemplate parses and evaluates a provisioning template body with
// params, using this package's interpreter (Ref, Fn::Join, Fn::Sub,
// Fn::Split, Fn::Select, Fn::If with Conditions, and the AWS:: pseudo
// parameters) so that the AWS
// fake (awsfake) plays RegisterThing with the same rules as the broker
// rather than with a second interpreter. It is pure: no provider, no I/O.
// Errors are errkind.Invalid with a message saying what is wrong.
func EvaluateTemplate(body []byte, params map[string]string, region, account string) (Evaluated, error) {
	d, err := parseTemplate(body)
	if err != nil {
		return Evaluated{}, err
	}
	out := Evaluated{HasCDF: hasCDF(body)}
	e := &evaluator{doc: d, supplied: params, injected: map[string]string{}, region: region, account: account}
	for _, logical := range d.Logical {
		r := d.Resources[logical]
		override, err := overrideSettings(logical, r.Override)
		if err != nil {
			return Evaluated{}, err
		}
		props, err := e.evalProps(logical, r.Properties)
		if err != nil {
			return Evaluated{}, err
		}
		spec, err := interpret(logical, r.Type, props)
		if err != nil {
			return Evaluated{}, err
		}
		switch t := spec.(type) {
		case thingSpec:
			out.Thing = EvaluatedThing{Name: t.Name, ThingType: t.ThingType, Attributes: t.Attributes, Groups: t.Groups, Override: override}
		case certSpec:
			out.Certificate = &EvaluatedCertificate{ID: t.ID, PEM: t.PEM, CAPEM: t.CAPEM, CSR: t.CSR, Status: t.Status, Override: override}
		case policySpec:
			out.Policies = append(out.Policies, EvaluatedPolicy(t))
		}
	}
	return out, nil
}

// hasCDF reports whether a template body has a top-level CDF key.
func hasCDF(body []byte) bool {
	var top map[string]any
	if err := json.Unmarshal(body, &top); err != nil {
		return false
	}
	_, ok := top["CDF"]
	return ok
}

// overrideSettings reads a resource's OverrideSettings: string values only.
func overrideSettings(logical string, m map[string]any) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, errkind.New(errkind.Invalid, "resource %q: OverrideSettings.%s must be a string, not %s", logical, k, describe(v))
		}
		out[k] = s
	}
	return out, nil
}
