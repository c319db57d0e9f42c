package api

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes keeps docs/openapi-vmm.yaml and the server's
// routes the same set of paths and methods.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("../../docs/openapi-vmm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pathRe := regexp.MustCompile(`^  (/\S*):$`)
	methodRe := regexp.MustCompile(`^    (get|put|post|patch|delete):$`)
	var doc []string
	inPaths, cur := false, ""
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && line != "" && !strings.HasPrefix(line, " "):
			inPaths = false
		case inPaths && pathRe.MatchString(line):
			cur = pathRe.FindStringSubmatch(line)[1]
		case inPaths && methodRe.MatchString(line):
			doc = append(doc, strings.ToUpper(methodRe.FindStringSubmatch(line)[1])+" "+cur)
		}
	}
	var code []string
	for path, r := range NewServer(Options{}).routeTable() {
		for method := range r {
			code = append(code, method+" "+path)
		}
	}
	slices.Sort(doc)
	slices.Sort(code)
	if !slices.Equal(doc, code) {
		t.Fatalf("openapi-vmm.yaml has\n%s\nthe server has\n%s", strings.Join(doc, "\n"), strings.Join(code, "\n"))
	}
}
