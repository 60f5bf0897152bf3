package httpapi

import (
	_ "embed"
	"net/http"
	"slices"
	"strconv"
)

// openAPIDocument is the OpenAPI 3.0 description of this API. A test checks
// that its paths and methods are exactly the route table's.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPIDocument returns the API's OpenAPI 3.0 document (YAML), for tools
// and the operator CLI.
func OpenAPIDocument() []byte { return slices.Clone(openAPIDocument) }

// openAPI serves GET /openapi.yaml (no token needed).
func (a *API) openAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/yaml; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDocument)
}
