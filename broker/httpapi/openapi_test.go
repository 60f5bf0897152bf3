package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPIDocument())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// routeKey turns a mux pattern into "METHOD /path" with OpenAPI parameters.
func routeKey(pattern string) string {
	return strings.ReplaceAll(pattern, "...}", "}")
}

// TestOpenAPIMatchesRoutes keeps the document and the route table in step:
// the same (method, path) pairs, and security exactly where the table
// requires a token.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	if len(doc.Security) == 0 {
		t.Fatal("the document has no global security requirement (bearer)")
	}
	ops := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[method+" "+path] = op
		}
	}
	routes := map[string]Route{}
	for _, rt := range New(Deps{}).Routes() {
		routes[routeKey(rt.Pattern)] = rt
	}

	var missing, extra []string
	for k := range routes {
		if ops[k] == nil {
			missing = append(missing, k)
		}
	}
	for k := range ops {
		if _, ok := routes[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.yaml:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("openapi.yaml documents routes the API does not serve:\n  %s", strings.Join(extra, "\n  "))
	}

	for k, rt := range routes {
		op := ops[k]
		if op == nil {
			continue
		}
		t.Run(k, func(t *testing.T) {
			open := op.Security != nil && len(*op.Security) == 0
			if open != rt.Open {
				t.Errorf("open in the document = %v, in the route table = %v (open routes have security: [])", open, rt.Open)
			}
			if !rt.Open && op.Responses.Status(http.StatusUnauthorized) == nil {
				t.Errorf("a route that needs a token documents no 401")
			}
			if op.OperationID == "" || op.Summary == "" {
				t.Errorf("operation has no operationId or summary")
			}
		})
	}
}

// TestOpenAPIErrorsAreMessages checks every documented error response is
// the {"message"} body.
func TestOpenAPIErrorsAreMessages(t *testing.T) {
	doc := loadOpenAPI(t)
	errSchema := doc.Components.Schemas["Error"]
	if errSchema == nil || !slices.Equal(errSchema.Value.Required, []string{"message"}) {
		t.Fatalf("components.schemas.Error must require message")
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code, resp := range op.Responses.Map() {
				if code != "default" && code < "400" {
					continue
				}
				for mt, c := range resp.Value.Content {
					if c.Schema == nil || c.Schema.Value != errSchema.Value {
						t.Errorf("%s %s %s %s: error body is not the Error schema", method, path, code, mt)
					}
				}
			}
		}
	}
}

// TestOpenAPISchemasMatchWireTypes checks the documented field names
// against the json tags of the shared/cdf wire types, so the document
// cannot drift from what the API really sends.
func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for schema, v := range map[string]any{
		"Component":                 cdf.Component{},
		"ConfigurationUpdate":       cdf.ConfigurationUpdate{},
		"EditableTemplate":          cdf.EditableTemplate{},
		"Template":                  cdf.Template{},
		"TemplateList":              cdf.TemplateList{},
		"Pagination":                cdf.Pagination{},
		"CertInfo":                  cdf.CertInfo{},
		"CdfProvisioningParameters": cdf.CdfProvisioningParameters{},
		"NewCore":                   cdf.NewCore{},
		"CoreTaskOptions":           cdf.CoreTaskOptions{},
		"NewCoreTask":               cdf.NewCoreTask{},
		"TaskItem":                  cdf.TaskItem{},
		"CoreTask":                  cdf.CoreTask{},
		"CoreTaskList":              cdf.CoreTaskList{},
		"Artifact":                  cdf.Artifact{},
		"TemplateRef":               cdf.TemplateRef{},
		"ReportedTemplate":          cdf.ReportedTemplate{},
		"CoreTemplate":              cdf.CoreTemplate{},
		"InstalledComponent":        cdf.InstalledComponent{},
		"EffectiveDeployment":       cdf.EffectiveDeployment{},
		"Device":                    cdf.Device{},
		"Core":                      cdf.Core{},
		"CoreList":                  cdf.CoreList{},
		"NewDevice":                 cdf.NewDevice{},
		"DeviceTaskOptions":         cdf.DeviceTaskOptions{},
		"NewDeviceTask":             cdf.NewDeviceTask{},
		"DeviceTask":                cdf.DeviceTask{},
		"DeviceTaskList":            cdf.DeviceTaskList{},
		"ClientDevice":              cdf.ClientDevice{},
		"ClientDeviceList":          cdf.ClientDeviceList{},
		"DeploymentTargets":         cdf.DeploymentTargets{},
		"NewDeploymentTask":         cdf.NewDeploymentTask{},
		"ComponentChange":           cdf.ComponentChange{},
		"CoreDeploymentPlan":        cdf.CoreDeploymentPlan{},
		"DeploymentPlan":            cdf.DeploymentPlan{},
		"ItemPlan":                  cdf.ItemPlan{},
		"CoreTaskPlan":              cdf.CoreTaskPlan{},
		"DeviceTaskPlan":            cdf.DeviceTaskPlan{},
		"CoreDeployment":            cdf.CoreDeployment{},
		"DeploymentTask":            cdf.DeploymentTask{},
		"DeploymentTaskList":        cdf.DeploymentTaskList{},
		"DeploymentTaskCoreList":    cdf.DeploymentTaskCoreList{},
		"CoreDeploymentList":        cdf.CoreDeploymentList{},
		"FleetSummary":              cdf.FleetSummary{},
		"FleetTemplate":             cdf.FleetTemplate{},
		"FleetVersion":              cdf.FleetVersion{},
		"FleetCore":                 cdf.FleetCore{},
		"FleetCoreList":             cdf.FleetCoreList{},
		"Error":                     cdf.ErrorBody{},
		"CertificateAuthority":      caResource{},
		"Thing":                     thingView{},
		"EnrollmentToken":           enrollmentTokenResponse{},
		"EnrollmentTokenRequest":    enrollmentTokenRequest{},
	} {
		t.Run(schema, func(t *testing.T) {
			ref := doc.Components.Schemas[schema]
			if ref == nil {
				t.Fatalf("components.schemas.%s is missing", schema)
			}
			got := schemaProperties(ref.Value)
			want := jsonFields(reflect.TypeOf(v))
			if !slices.Equal(got, want) {
				t.Errorf("properties = %v\nwire fields = %v", got, want)
			}
		})
	}
}

// schemaProperties lists the property names of a schema, through allOf.
func schemaProperties(s *openapi3.Schema) []string {
	var names []string
	for name := range s.Properties {
		names = append(names, name)
	}
	for _, sub := range s.AllOf {
		names = append(names, schemaProperties(sub.Value)...)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// TestOpenAPIServed checks GET /openapi.yaml on a live server, without a token.
func TestOpenAPIServed(t *testing.T) {
	srv := httptest.NewServer(New(Deps{Auth: metricsAuth{}}).Handler())
	t.Cleanup(srv.Close)
	for _, accept := range []string{"", "application/yaml", "text/html"} {
		t.Run("Accept "+accept, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/openapi.yaml", nil)
			if err != nil {
				t.Fatal(err)
			}
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /openapi.yaml = %d %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
				t.Errorf("Content-Type = %q, want application/yaml", ct)
			}
			if !bytes.Equal(body, OpenAPIDocument()) {
				t.Errorf("served document differs from the embedded one")
			}
			if _, err := openapi3.NewLoader().LoadFromData(body); err != nil {
				t.Errorf("served document does not load: %v", err)
			}
		})
	}
}
