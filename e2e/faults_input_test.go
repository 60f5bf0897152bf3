package e2e

import (
	"net/url"
	"strings"
	"testing"
)

// hostileNames go into every path parameter of every route.
var hostileNames = []string{
	"a:b", "café", "x' OR '1'='1", "x\"; DROP TABLE cores;--", "../../secrets.key", "..", "%00",
	strings.Repeat("n", 300), "a/b", "-rf", "名前", " ", "a\nb",
}

// hostileBodies go to every route that takes a body.
var hostileBodies = map[string]string{
	"deep JSON":         strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
	"deep object":       strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000),
	"oversized":         `{"name":"` + strings.Repeat("x", 5<<20) + `"}`, // over the 4 MiB default
	"not JSON":          "<xml/>",
	"wrong types":       `{"name":["x"],"components":"y","cores":7,"targets":null,"type":{}}`,
	"huge number":       `{"count":1e999999,"expiresInSeconds":-1e308}`,
	"invalid UTF-8":     "{\"name\":\"\xff\xfe\"}", // decoded as U+FFFD: acceptable where any string is
	"SQL metacharacter": `{"name":"x'; DROP TABLE templates;--","components":[{"key":"a'--","version":"1.0.0"}]}`,
}

// notLists are GET routes ending in a literal segment that are not
// paginated collections.
var notLists = map[string]bool{
	"GET /fleet/summary":          true,
	"GET /patches/{id}/steps":     true,
	"GET /certificateAuthorities": true,
	// Unpaginated in openapi.yaml (no count parameter): they answer every item.
	"GET /provisioningTemplates":                               true,
	"GET /registry/coreDevices/{name}/associatedClientDevices": true,
}

// pathWith fills every path parameter of a route with v (escaped).
func pathWith(pattern, v string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	return method, pathParam.ReplaceAllString(path, strings.ReplaceAll(url.PathEscape(v), "$", "$$"))
}

// TestFaultsHostileInput sends hostile names to every route with a path
// parameter, hostile bodies to every route that takes one, and pagination
// counts outside 1–1000 to every list route, all enumerated from the route
// table. Every answer is a 4xx (or a success where the input happens to be
// acceptable), never a 5xx, never a hang; errors carry a message, and the
// broker logs no error.
func TestFaultsHostileInput(t *testing.T) {
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore("hostile-core")
	routes := brokerRoutes(t)
	check := func(what, method, path string, body any, r response) {
		t.Helper()
		if r.Status >= 500 {
			t.Errorf("%s: %s %.120s: %d %.300s", what, method, path, r.Status, r.Body)
		}
		if r.Status >= 400 && r.Status != 404 && r.Status != 405 && r.Message() == "" && !strings.HasPrefix(path, "/ui") {
			t.Errorf("%s: %s %.120s: %d without a message: %.200s", what, method, path, r.Status, r.Body)
		}
	}
	var lists []string
	for _, rt := range routes {
		if strings.Contains(rt.Pattern, "{") {
			for _, name := range hostileNames {
				method, path := pathWith(rt.Pattern, name)
				check("hostile name "+name, method, path, nil, b.do(method, path, nil))
			}
		}
		method, path := routeRequest(rt.Pattern)
		if method == "POST" || method == "PUT" || method == "PATCH" {
			for what, body := range hostileBodies {
				r := b.do(method, path, body)
				check(what, method, path, body, r)
				if r.Status/100 == 2 && what != "SQL metacharacter" && what != "wrong types" && what != "invalid UTF-8" {
					t.Errorf("%s: %s %s accepted: %d %.200s", what, method, path, r.Status, r.Body)
				}
			}
		}
		// A list route: a GET of JSON whose path ends in a collection name.
		segs := strings.Split(strings.TrimPrefix(rt.Pattern, "GET "), "/")
		if method == "GET" && !rt.Raw && !rt.Open && !strings.HasPrefix(segs[len(segs)-1], "{") && !notLists[rt.Pattern] {
			_, p := pathWith(rt.Pattern, "hostile-core")
			lists = append(lists, p)
		}
	}
	if len(lists) < 5 {
		t.Fatalf("only %d list routes found (%v): the pagination check would prove little", len(lists), lists)
	}
	for _, path := range lists {
		for _, count := range []string{"0", "1001", "-1", "ten", "1e3", "99999999999999999999", ""} {
			p := path + "?count=" + url.QueryEscape(count)
			r := b.do("GET", p, nil)
			if count == "" {
				check("empty count", "GET", p, nil, r)
				continue
			}
			// A collection under a missing parent may answer 404 first.
			want := r.Status == 400 || (r.Status == 404 && strings.Count(path, "/") > 1)
			if !want || r.Message() == "" {
				t.Errorf("GET %s: %d %.200s, want 400 with a message", p, r.Status, r.Body)
			}
		}
		for _, count := range []string{"1", "1000"} {
			p := path + "?count=" + count
			check("valid count", "GET", p, nil, b.do("GET", p, nil))
		}
	}
	t.Logf("%d routes, %d list routes: %v", len(routes), len(lists), lists)
	b.must(200, "GET", "/cores/hostile-core", nil)
	if strings.Contains(b.log(), `"level":"ERROR"`) {
		t.Errorf("hostile input produced errors in the log:\n%s", tail(b.log(), 3000))
	}
}
