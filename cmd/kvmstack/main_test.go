package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersed(t *testing.T) {
	app := newApp()
	tests := []struct{ in, want string }{
		{"kvmstack flavor create m1 --vcpus 2 --memory 512", "kvmstack flavor create --vcpus 2 --memory 512 m1"},
		{"kvmstack -o json image list", "kvmstack -o json image list"},
		{"kvmstack --addr x:1 instance create vm --flavor f --count=3 --meta a=b", "kvmstack --addr x:1 instance create --flavor f --count=3 --meta a=b vm"},
		{"kvmstack image create d --public --file f", "kvmstack image create --public --file f d"},
		{"kvmstack instance delete -- -weird", "kvmstack instance delete -weird"},
		{"kvmstack nosuch a --b", "kvmstack nosuch a --b"},
	}
	for _, tc := range tests {
		got := strings.Join(interspersed(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestPrintResult(t *testing.T) {
	rows := []map[string]any{{"id": "a", "name": "one", "vcpus": 2.0, "meta": map[string]any{"k": "v"}}, {"id": "b", "name": ""}}
	tests := []struct {
		format string
		v      any
		cols   []string
		want   string
	}{
		{"table", rows, []string{"id", "name", "vcpus"}, "ID  NAME  VCPUS\na   one   2\nb   -     -\n"},
		{"table", rows[0], nil, "id     a\nmeta   {\"k\":\"v\"}\nname   one\nvcpus  2\n"},
		{"json", []int{1}, nil, "[\n  1\n]\n"},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		app := &cli.App{Writer: &buf}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.String("output", "table", "")
		fs.Set("output", tc.format)
		if err := printResult(cli.NewContext(app, fs, nil), tc.v, tc.cols...); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tc.want {
			t.Errorf("%s %v:\n got %q\nwant %q", tc.format, tc.v, buf.String(), tc.want)
		}
	}
}
