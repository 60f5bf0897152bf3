package awsfake

import (
	"encoding/json"
	"strings"
)

// IoT Core policy actions the fake's MQTT endpoint authorizes.
const (
	ActionConnect   = "iot:Connect"
	ActionPublish   = "iot:Publish"
	ActionSubscribe = "iot:Subscribe"
	ActionReceive   = "iot:Receive"
)

// PolicyVars are the values of the policy variables a connection has:
// ${iot:Certificate.Subject.CommonName}, ${iot:Connection.Thing.ThingName}
// (empty when the client id is not a thing attached to the certificate)
// and ${iot:ClientId}.
type PolicyVars struct {
	CommonName string
	ThingName  string
	ClientID   string
}

// policyDoc is the part of an IoT policy document the evaluator reads.
type policyDoc struct {
	Statement oneOrMany[policyStatement]
}

type policyStatement struct {
	Effect   string
	Action   oneOrMany[string]
	Resource oneOrMany[string]
}

// oneOrMany decodes a JSON value that is either one item or a list of
// them, as policy documents allow for Statement, Action and Resource.
type oneOrMany[T any] []T

func (o *oneOrMany[T]) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		var list []T
		if err := json.Unmarshal(b, &list); err != nil {
			return err
		}
		*o = list
		return nil
	}
	var one T
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	*o = oneOrMany[T]{one}
	return nil
}

// Allowed evaluates IoT policy documents the way AWS IoT Core does for one
// request: action on resource (a full ARN such as
// arn:aws:iot:us-east-1:123456789012:topic/a/b) is allowed when some
// statement allows it and none denies it. In actions and resources '*'
// matches any run of characters (across '/' too) and '?' any single one;
// MQTT's '+' and '#' have no special meaning. A statement whose resource
// uses a policy variable the connection has no value for does not apply.
// A document that does not parse allows nothing.
func Allowed(docs []string, action, resource string, vars PolicyVars) bool {
	allowed := false
	for _, d := range docs {
		var doc policyDoc
		if err := json.Unmarshal([]byte(d), &doc); err != nil {
			continue
		}
		for _, st := range doc.Statement {
			if !st.matches(action, resource, vars) {
				continue
			}
			switch st.Effect {
			case "Deny":
				return false
			case "Allow":
				allowed = true
			}
		}
	}
	return allowed
}

func (st policyStatement) matches(action, resource string, vars PolicyVars) bool {
	actionMatch := false
	for _, a := range st.Action {
		if globMatch(strings.ToLower(a), strings.ToLower(action)) {
			actionMatch = true
			break
		}
	}
	if !actionMatch {
		return false
	}
	for _, r := range st.Resource {
		pattern, ok := substitute(r, vars)
		if ok && globMatch(pattern, resource) {
			return true
		}
	}
	return false
}

// substitute replaces the policy variables in a resource pattern; ok is
// false when one of them has no value for this connection.
func substitute(pattern string, vars PolicyVars) (string, bool) {
	values := map[string]string{
		"${iot:Certificate.Subject.CommonName}": vars.CommonName,
		"${iot:Connection.Thing.ThingName}":     vars.ThingName,
		"${iot:ClientId}":                       vars.ClientID,
	}
	for name, v := range values {
		if !strings.Contains(pattern, name) {
			continue
		}
		if v == "" {
			return "", false
		}
		pattern = strings.ReplaceAll(pattern, name, v)
	}
	return pattern, true
}

// globMatch reports whether s matches pattern, where '*' matches any run
// of characters and '?' any single character.
func globMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last '*'.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
