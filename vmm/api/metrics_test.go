package api

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestExpositionParses feeds the exposition to Prometheus' own text
// parser, with label values that need escaping, and checks every value
// comes back.
func TestExpositionParses(t *testing.T) {
	odd := "a\"b\\c\nd"
	m := &Metrics{
		Exits:    map[string]uint64{"io": 1 << 40, odd: 3, "mmio": 0},
		Devices:  []DeviceMetrics{{Name: "root", Kind: "drive", Bytes: 512, Ops: 1, Errors: 2}, {Name: odd, Kind: "net", Bytes: 7}},
		VCPUTime: []time.Duration{250 * time.Millisecond, 0},
	}
	var b strings.Builder
	if err := writeExposition(&b, families(Status{State: "paused", Uptime: 90 * time.Second, VCPUs: 2, MemoryBytes: 1 << 30}, m)); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	got, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b.String())
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f, ok := got[name]
		if !ok {
			t.Fatalf("no family %s", name)
		}
	next:
		for _, mt := range f.GetMetric() {
			lp := mt.GetLabel()
			if len(lp)*2 != len(labels) {
				continue
			}
			for i, l := range lp {
				if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
					continue next
				}
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
		t.Fatalf("no %s%v in\n%s", name, labels, b.String())
		return 0
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vmm_state", []string{"state", "paused"}, 1},
		{"vmm_uptime_seconds", nil, 90},
		{"vmm_vcpus", nil, 2},
		{"vmm_memory_bytes", nil, 1 << 30},
		{"vmm_exits_total", []string{"reason", "io"}, 1 << 40},
		{"vmm_exits_total", []string{"reason", odd}, 3},
		{"vmm_exits_total", []string{"reason", "mmio"}, 0},
		{"vmm_device_bytes_total", []string{"device", "root", "kind", "drive"}, 512},
		{"vmm_device_errors_total", []string{"device", "root", "kind", "drive"}, 2},
		{"vmm_device_bytes_total", []string{"device", odd, "kind", "net"}, 7},
		{"vmm_vcpu_seconds_total", []string{"vcpu", "0"}, 0.25},
		{"vmm_vcpu_seconds_total", []string{"vcpu", "1"}, 0},
	} {
		if v := value(tt.name, tt.labels...); v != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, v, tt.want)
		}
	}
	if typ := got["vmm_exits_total"].GetType().String(); typ != "COUNTER" {
		t.Errorf("vmm_exits_total is a %s", typ)
	}
}
