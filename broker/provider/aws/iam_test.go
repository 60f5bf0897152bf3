package aws_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// services maps the provider's client fields and SDK packages to IAM
// service prefixes.
var services = map[string]string{"iot": "iot", "gg": "greengrass", "greengrassv2": "greengrass", "s3": "s3", "presign": "s3", "bus": "events"}

// impliedActions are allowed because an operation the provider calls needs
// them on the caller's behalf (Greengrass CreateDeployment manages the IoT
// job, reads the target and its shadows, and tags what it makes).
var impliedActions = map[string]string{
	"greengrass:TagResource": "greengrass:CreateDeployment",
	"iot:CancelJob":          "greengrass:CreateDeployment",
	"iot:CreateJob":          "greengrass:CreateDeployment",
	"iot:DeleteThingShadow":  "greengrass:CreateDeployment",
	"iot:DescribeJob":        "greengrass:CreateDeployment",
	"iot:GetThingShadow":     "greengrass:CreateDeployment",
	"iot:TagResource":        "greengrass:CreateDeployment",
	"iot:UpdateJob":          "greengrass:CreateDeployment",
	"iot:UpdateThingShadow":  "greengrass:CreateDeployment",
}

// calledActions parses the provider's source and returns the IAM action
// of every AWS operation it calls: p.<client>.<Op>(...) and
// <pkg>.New<Op>Paginator(...).
func calledActions(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			op := sel.Sel.Name
			switch x := sel.X.(type) {
			case *ast.SelectorExpr: // p.iot.CreateThing
				if id, ok := x.X.(*ast.Ident); ok && id.Name == "p" {
					if svc, ok := services[x.Sel.Name]; ok {
						op = strings.TrimPrefix(op, "Presign") // PresignGetObject needs s3:GetObject
						if op == "HeadObject" {
							op = "GetObject" // IAM has no s3:HeadObject
						}
						actions[svc+":"+op] = true
					}
				}
			case *ast.Ident: // iot.NewListThingPrincipalsPaginator
				if svc, ok := services[x.Name]; ok && strings.HasPrefix(op, "New") && strings.HasSuffix(op, "Paginator") {
					actions[svc+":"+strings.TrimSuffix(strings.TrimPrefix(op, "New"), "Paginator")] = true
				}
			}
			return true
		})
	}
	return actions
}

// policyActions reads the IAM policy from docs/aws.md.
func policyActions(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "aws.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "<!-- iam-policy:begin -->")
	block, _, ok2 := strings.Cut(rest, "<!-- iam-policy:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/aws.md has no <!-- iam-policy:begin --> ... <!-- iam-policy:end --> block")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimSuffix(strings.TrimPrefix(block, "```json"), "```")
	var pol struct {
		Version   string
		Statement []struct {
			Effect   string
			Action   json.RawMessage
			Resource json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(block), &pol); err != nil {
		t.Fatalf("the IAM policy in docs/aws.md is not valid JSON: %v", err)
	}
	if pol.Version != "2012-10-17" || len(pol.Statement) == 0 {
		t.Fatalf("policy Version %q, %d statements", pol.Version, len(pol.Statement))
	}
	actions := map[string]bool{}
	for _, st := range pol.Statement {
		if st.Effect != "Allow" || len(st.Resource) == 0 {
			t.Fatalf("statement %s: want Effect Allow and a Resource", st.Action)
		}
		var list []string
		if err := json.Unmarshal(st.Action, &list); err != nil {
			var one string
			if err := json.Unmarshal(st.Action, &one); err != nil {
				t.Fatalf("Action %s is neither a string nor a list", st.Action)
			}
			list = []string{one}
		}
		for _, a := range list {
			if strings.Contains(a, "*") {
				t.Errorf("action %q: wildcards are not least privilege", a)
			}
			actions[a] = true
		}
	}
	return actions
}

// TestIAMPolicyMatchesCalls: the documented policy allows every AWS
// operation the provider calls, and nothing it does not need.
func TestIAMPolicyMatchesCalls(t *testing.T) {
	called := calledActions(t)
	if len(called) < 20 || !called["iot:CreateThing"] || !called["greengrass:CreateDeployment"] || !called["events:PutEvents"] || !called["iot:ListThingPrincipals"] {
		t.Fatalf("the source scan found too little: %v", sorted(called))
	}
	allowed := policyActions(t)
	for a := range called {
		if !allowed[a] {
			t.Errorf("the provider calls %s but the IAM policy in docs/aws.md does not allow it", a)
		}
	}
	for a := range allowed {
		if called[a] {
			continue
		}
		if by, ok := impliedActions[a]; ok && called[by] {
			continue
		}
		t.Errorf("the IAM policy in docs/aws.md allows %s, which no provider call needs", a)
	}
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
