package provisioning

import (
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	// thingNameRE is DESIGN.md's rule for thing and thing-group names.
	thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)
	// policyNameRE is AWS IoT's rule for policy names.
	policyNameRE = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
)

// evaluator resolves intrinsic functions in resource properties. In check
// mode every parameter yields a placeholder of its type, so a template can
// be checked before any parameters exist.
type evaluator struct {
	doc      *document
	check    bool
	supplied map[string]string
	injected map[string]string
	region   string
	account  string
}

// evalProps evaluates every property of one resource.
func (e *evaluator) evalProps(logical string, props map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(props))
	for k, v := range props {
		ev, err := e.eval(v)
		if err != nil {
			return nil, invalid("resource %q, property %s: %s", logical, k, msgOf(err))
		}
		out[k] = ev
	}
	return out, nil
}

// eval resolves intrinsic functions in v. Results are JSON values, with
// list parameters and Fn::Split results as []string.
func (e *evaluator) eval(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		if len(t) == 1 {
			for k, arg := range t {
				if k == "Ref" || strings.HasPrefix(k, "Fn::") {
					return e.intrinsic(k, arg)
				}
			}
		}
		out := make(map[string]any, len(t))
		for k, sub := range t {
			ev, err := e.eval(sub)
			if err != nil {
				return nil, err
			}
			out[k] = ev
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, sub := range t {
			ev, err := e.eval(sub)
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	}
	return v, nil
}

func (e *evaluator) intrinsic(fn string, arg any) (any, error) {
	switch fn {
	case "Ref":
		name, ok := arg.(string)
		if !ok {
			return nil, invalid("Ref must name a parameter as a string")
		}
		return e.lookup(name)
	case "Fn::Join":
		a, ok := arg.([]any)
		if !ok || len(a) != 2 {
			return nil, invalid("Fn::Join takes [\"<delimiter>\", [<values>]]")
		}
		delim, ok := a[0].(string)
		if !ok {
			return nil, invalid("Fn::Join's delimiter must be a string")
		}
		list, err := e.evalList("Fn::Join", a[1])
		if err != nil {
			return nil, err
		}
		return strings.Join(list, delim), nil
	case "Fn::Sub":
		return e.sub(arg)
	case "Fn::Split":
		a, ok := arg.([]any)
		if !ok || len(a) != 2 {
			return nil, invalid("Fn::Split takes [\"<delimiter>\", \"<string>\"]")
		}
		delim, ok := a[0].(string)
		if !ok || delim == "" {
			return nil, invalid("Fn::Split's delimiter must be a non-empty string")
		}
		src, err := e.evalString("Fn::Split", a[1])
		if err != nil {
			return nil, err
		}
		return strings.Split(src, delim), nil
	case "Fn::Select":
		a, ok := arg.([]any)
		if !ok || len(a) != 2 {
			return nil, invalid("Fn::Select takes [<index>, [<values>]]")
		}
		idxText, err := e.evalString("Fn::Select", a[0])
		if err != nil {
			return nil, err
		}
		idx, err := strconv.Atoi(idxText)
		if err != nil || idx < 0 {
			if e.check && idxText == placeholder {
				idx = 0
			} else {
				return nil, invalid("Fn::Select's index must be a whole number from 0, got %q", idxText)
			}
		}
		list, err := e.evalList("Fn::Select", a[1])
		if err != nil {
			return nil, err
		}
		if idx >= len(list) {
			if e.check {
				return placeholder, nil
			}
			return nil, invalid("Fn::Select: index %d is out of range for a list of %d", idx, len(list))
		}
		return list[idx], nil
	case "Fn::If":
		a, ok := arg.([]any)
		if !ok || len(a) != 3 {
			return nil, invalid("Fn::If takes [\"<condition name>\", <value if true>, <value if false>]")
		}
		name, ok := a[0].(string)
		if !ok {
			return nil, invalid("Fn::If's first element must name a condition")
		}
		cond, err := e.condition(name, 0)
		if err != nil {
			return nil, err
		}
		yes, err := e.eval(a[1])
		if err != nil {
			return nil, err
		}
		no, err := e.eval(a[2])
		if err != nil {
			return nil, err
		}
		if cond {
			return yes, nil
		}
		return no, nil
	}
	return nil, invalid("unsupported intrinsic function %q: use Ref, Fn::Join, Fn::Sub, Fn::Split, Fn::Select or Fn::If", fn)
}

// maxConditionDepth bounds conditions referring to conditions (and loops).
const maxConditionDepth = 10

// condition evaluates the named condition of the Conditions section. In
// check mode every condition is true.
func (e *evaluator) condition(name string, depth int) (bool, error) {
	c, ok := e.doc.Conditions[name]
	if !ok {
		return false, invalid("condition %q is not declared under Conditions", name)
	}
	if depth >= maxConditionDepth {
		return false, invalid("condition %q: conditions refer to each other more than %d deep (a loop?)", name, maxConditionDepth)
	}
	return e.evalCondition(name, c, depth+1)
}

// evalCondition evaluates a condition expression: Fn::Equals, Fn::And,
// Fn::Or, Fn::Not or {"Condition": "<name>"}.
func (e *evaluator) evalCondition(name string, v any, depth int) (bool, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return false, invalid("condition %q must be one of Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition", name)
	}
	for fn, arg := range m {
		if fn == "Condition" {
			ref, ok := arg.(string)
			if !ok {
				return false, invalid("condition %q: Condition must name a condition", name)
			}
			return e.condition(ref, depth)
		}
		list, ok := arg.([]any)
		if !ok {
			return false, invalid("condition %q: %s takes a list", name, fn)
		}
		switch fn {
		case "Fn::Equals":
			if len(list) != 2 {
				return false, invalid("condition %q: Fn::Equals takes [<value>, <value>]", name)
			}
			a, err := e.evalString("Fn::Equals", list[0])
			if err != nil {
				return false, err
			}
			b, err := e.evalString("Fn::Equals", list[1])
			if err != nil {
				return false, err
			}
			return e.check || a == b, nil
		case "Fn::Not":
			if len(list) != 1 {
				return false, invalid("condition %q: Fn::Not takes [<condition>]", name)
			}
			c, err := e.evalCondition(name, list[0], depth)
			return e.check || !c, err
		case "Fn::And", "Fn::Or":
			if len(list) < 2 || len(list) > 10 {
				return false, invalid("condition %q: %s takes 2 to 10 conditions", name, fn)
			}
			and := fn == "Fn::And"
			result := and
			for _, sub := range list {
				c, err := e.evalCondition(name, sub, depth)
				if err != nil {
					return false, err
				}
				if and {
					result = result && c
				} else {
					result = result || c
				}
			}
			return e.check || result, nil
		}
		return false, invalid("condition %q uses %s: use Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition", name, fn)
	}
	return false, nil
}

// sub implements Fn::Sub: "${Name}" from the variables map or parameters,
// "${!Text}" for a literal "${Text}".
func (e *evaluator) sub(arg any) (any, error) {
	var text string
	vars := map[string]string{}
	switch t := arg.(type) {
	case string:
		text = t
	case []any:
		if len(t) != 2 {
			return nil, invalid("Fn::Sub takes \"<text>\" or [\"<text>\", {<variables>}]")
		}
		s, ok := t[0].(string)
		if !ok {
			return nil, invalid("Fn::Sub's text must be a string")
		}
		m, ok := t[1].(map[string]any)
		if !ok {
			return nil, invalid("Fn::Sub's variables must be an object")
		}
		text = s
		for k, v := range m {
			val, err := e.evalString("Fn::Sub variable "+strconv.Quote(k), v)
			if err != nil {
				return nil, err
			}
			vars[k] = val
		}
	default:
		return nil, invalid("Fn::Sub takes \"<text>\" or [\"<text>\", {<variables>}]")
	}
	var b strings.Builder
	for {
		i := strings.Index(text, "${")
		if i < 0 {
			b.WriteString(text)
			return b.String(), nil
		}
		b.WriteString(text[:i])
		rest := text[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			return nil, invalid("Fn::Sub: a ${ is not closed by }")
		}
		name := rest[:j]
		text = rest[j+1:]
		if strings.HasPrefix(name, "!") {
			b.WriteString("${" + name[1:] + "}")
			continue
		}
		name = strings.TrimSpace(name)
		if val, ok := vars[name]; ok {
			b.WriteString(val)
			continue
		}
		if name == "" || (strings.Contains(name, ".") && !pseudoParameters[name]) {
			return nil, invalid("Fn::Sub: ${%s} must name a parameter (write ${!%s} for a literal)", name, name)
		}
		v, err := e.lookup(name)
		if err != nil {
			return nil, err
		}
		s, ok := scalarString(v)
		if !ok {
			return nil, invalid("Fn::Sub: ${%s} is a list, not a string", name)
		}
		b.WriteString(s)
	}
}

// evalString evaluates v to a string (numbers and booleans are formatted).
func (e *evaluator) evalString(what string, v any) (string, error) {
	ev, err := e.eval(v)
	if err != nil {
		return "", err
	}
	s, ok := scalarString(ev)
	if !ok {
		return "", invalid("%s needs a string, not %s", what, describe(ev))
	}
	return s, nil
}

// evalList evaluates v to a list of strings.
func (e *evaluator) evalList(what string, v any) ([]string, error) {
	ev, err := e.eval(v)
	if err != nil {
		return nil, err
	}
	switch t := ev.(type) {
	case []string:
		return t, nil
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			s, ok := scalarString(x)
			if !ok {
				return nil, invalid("%s needs a list of strings, but an element is %s", what, describe(x))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, invalid("%s needs a list, not %s", what, describe(ev))
}

// placeholder is what every String parameter yields in check mode.
const placeholder = "placeholder"

// lookup resolves a Ref: a pseudo parameter, a CDF-injected parameter, a
// supplied value or the parameter's Default.
func (e *evaluator) lookup(name string) (any, error) {
	switch name {
	case "AWS::Region":
		return e.region, nil
	case "AWS::AccountId":
		return e.account, nil
	case "AWS::Partition":
		return "aws", nil
	}
	if v, ok := e.injected[name]; ok && !e.check {
		return v, nil
	}
	p, declared := e.doc.Parameters[name]
	if !declared {
		for _, opt := range injectedBy[name] {
			if !e.cdfOption(opt) {
				continue
			}
			if e.check {
				return placeholder, nil
			}
			return nil, invalid("parameter %q was not injected: CDF.%s did not run", name, opt)
		}
		return nil, invalid("Ref %q names no parameter: declare it under Parameters", name)
	}
	if e.check {
		switch p.Type {
		case "Number":
			return json.Number("1"), nil
		case "String":
			return placeholder, nil
		}
		return []string{placeholder}, nil
	}
	if raw, ok := e.supplied[name]; ok {
		switch p.Type {
		case "String":
			return raw, nil
		case "Number":
			if _, err := strconv.ParseFloat(strings.TrimSpace(raw), 64); err != nil {
				return nil, invalid("parameter %q must be a number, got %q", name, raw)
			}
			return json.Number(strings.TrimSpace(raw)), nil
		}
		return splitList(raw), nil
	}
	if p.HasDefault {
		return convertDefault(name, p.Type, p.Default)
	}
	return nil, invalid("parameter %q is referenced by the template but was not supplied and has no Default: add it to provisioningParameters", name)
}

func (e *evaluator) cdfOption(opt string) bool {
	switch opt {
	case "createDeviceCertificate":
		return e.doc.CDF.CreateDeviceCertificate
	case "registerDeviceCertificateWithoutCA":
		return e.doc.CDF.RegisterDeviceCertificateWithoutCA
	case "createDeviceAWSCertificate":
		return e.doc.CDF.CreateDeviceAWSCertificate
	}
	return false
}

// thingSpec is an evaluated AWS::IoT::Thing resource.
type thingSpec struct {
	Name       string
	ThingType  string
	Attributes map[string]string
	Groups     []string
}

// certSpec is an evaluated AWS::IoT::Certificate resource: exactly one of
// PEM, CSR and ID is set.
type certSpec struct {
	PEM, CAPEM, CSR, ID string
	Status              string
}

// policySpec is an evaluated AWS::IoT::Policy resource.
type policySpec struct {
	Logical  string
	Name     string // "" until named after the thing when only a document is given
	Document string // "" to attach an existing policy
}

// interpret turns one resource's evaluated properties into its spec,
// checking the properties' shape (not their content).
func interpret(logical, typ string, props map[string]any) (any, error) {
	str := func(key string) (string, bool, error) {
		v, has := props[key]
		if !has || v == nil {
			return "", false, nil
		}
		s, ok := scalarString(v)
		if !ok {
			return "", true, invalid("resource %q: %s must be a string, not %s", logical, key, describe(v))
		}
		return s, true, nil
	}
	allowed := func(keys ...string) error {
		for k := range props {
			found := false
			for _, a := range keys {
				found = found || k == a
			}
			if !found {
				return invalid("resource %q (%s) has an unsupported property %q: use %s", logical, typ, k, strings.Join(keys, ", "))
			}
		}
		return nil
	}
	switch typ {
	case typeThing:
		if err := allowed("ThingName", "AttributePayload", "AttributeRecord", "ThingTypeName", "ThingGroups", "BillingGroup"); err != nil {
			return nil, err
		}
		var t thingSpec
		var err error
		var has bool
		if t.Name, has, err = str("ThingName"); err != nil {
			return nil, err
		} else if !has {
			return nil, invalid("resource %q: AWS::IoT::Thing needs a ThingName", logical)
		}
		if t.ThingType, _, err = str("ThingTypeName"); err != nil {
			return nil, err
		}
		t.Attributes = map[string]string{}
		for _, key := range []string{"AttributePayload", "AttributeRecord"} {
			if err := attributes(logical, key, props[key], t.Attributes); err != nil {
				return nil, err
			}
		}
		if g, has := props["ThingGroups"]; has && g != nil {
			list, ok := stringList(g)
			if !ok {
				return nil, invalid("resource %q: ThingGroups must be a list of thing-group names", logical)
			}
			t.Groups = list
		}
		return t, nil
	case typeCertificate:
		if err := allowed("CertificateId", "CertificatePem", "CACertificatePem", "CertificateSigningRequest", "Status"); err != nil {
			return nil, err
		}
		var c certSpec
		var err error
		sources := 0
		for _, f := range []struct {
			key string
			dst *string
		}{{"CertificateId", &c.ID}, {"CertificatePem", &c.PEM}, {"CertificateSigningRequest", &c.CSR}, {"CACertificatePem", &c.CAPEM}, {"Status", &c.Status}} {
			var has bool
			if *f.dst, has, err = str(f.key); err != nil {
				return nil, err
			}
			if has && f.key != "CACertificatePem" && f.key != "Status" {
				sources++
			}
		}
		if sources != 1 {
			return nil, invalid("resource %q: AWS::IoT::Certificate needs exactly one of CertificatePem, CertificateSigningRequest and CertificateId", logical)
		}
		if c.CAPEM != "" && c.PEM == "" {
			return nil, invalid("resource %q: CACertificatePem goes with CertificatePem", logical)
		}
		switch c.Status {
		case "":
			c.Status = "ACTIVE"
		case "ACTIVE", "INACTIVE":
		default:
			return nil, invalid("resource %q: Status must be ACTIVE or INACTIVE, got %q", logical, c.Status)
		}
		return c, nil
	case typePolicy:
		if err := allowed("PolicyName", "PolicyDocument"); err != nil {
			return nil, err
		}
		p := policySpec{Logical: logical}
		var err error
		if p.Name, _, err = str("PolicyName"); err != nil {
			return nil, err
		}
		if doc, has := props["PolicyDocument"]; has && doc != nil {
			if p.Document, err = policyDocument(doc); err != nil {
				if s, ok := doc.(string); ok && s == placeholder {
					p.Document = "{}" // check mode: a Ref'd document is checked when provisioning
				} else {
					return nil, invalid("resource %q: PolicyDocument: %s", logical, msgOf(err))
				}
			}
		}
		if p.Name == "" && p.Document == "" {
			return nil, invalid("resource %q: AWS::IoT::Policy needs a PolicyName, a PolicyDocument, or both", logical)
		}
		if p.Name != "" && !policyNameRE.MatchString(p.Name) {
			return nil, invalid("resource %q: PolicyName %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9 and _+=,.@-", logical, p.Name)
		}
		return p, nil
	}
	return nil, invalid("resource %q has unsupported Type %q", logical, typ)
}

// attributes copies a thing's attribute object (either the attributes
// themselves or CloudFormation's {"Attributes": {...}}) into dst.
func attributes(logical, key string, v any, dst map[string]string) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return invalid("resource %q: %s must be an object of attribute names to values", logical, key)
	}
	if inner, ok := m["Attributes"].(map[string]any); ok && len(m) == 1 {
		m = inner
	}
	for k, av := range m {
		s, ok := scalarString(av)
		if !ok {
			return invalid("resource %q: attribute %q must be a string, not %s", logical, k, describe(av))
		}
		dst[k] = s
	}
	return nil
}

// stringList reads a list of strings ([]string or []any of scalars).
func stringList(v any) ([]string, bool) {
	switch t := v.(type) {
	case []string:
		return t, true
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			s, ok := scalarString(x)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	case string:
		return []string{t}, true
	}
	return nil, false
}

// sortedUnique returns the sorted distinct non-empty strings of in.
func sortedUnique(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
