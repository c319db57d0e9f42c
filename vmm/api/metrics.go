package api

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"strings"
)

// MetricsContentType is the Prometheus text exposition format, version
// 0.0.4, which every Prometheus server scrapes.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// The exposition is written here rather than through client_golang: its
// package initialisers (default registry, Go and process collectors,
// protobuf descriptors) cost more CPU at every vmm start than the whole
// start → API-ready budget (benchmarks/api). Tests parse the output with
// Prometheus' own parser (prometheus/common/expfmt), so the format stays
// what a scraper reads.

// family is one metric family: its samples share a name, help and type.
type family struct {
	name, help, typ string
	samples         []sample
}

type sample struct {
	labels []string // name, value, name, value...
	value  float64
}

// families renders a machine's status and metrics (m is nil before the
// start: only the state and size are known).
func families(st Status, m *Metrics) []family {
	fs := []family{
		{"vmm_state", "The vm's lifecycle state (1 for the current one).", "gauge", []sample{{[]string{"state", st.State}, 1}}},
		{"vmm_vcpus", "Number of vCPUs.", "gauge", []sample{{nil, float64(st.VCPUs)}}},
		{"vmm_memory_bytes", "Guest RAM.", "gauge", []sample{{nil, float64(st.MemoryBytes)}}},
	}
	if m == nil {
		return fs
	}
	fs = append(fs, family{"vmm_uptime_seconds", "Time since the guest started.", "gauge", []sample{{nil, st.Uptime.Seconds()}}})
	exits := family{"vmm_exits_total", "VM exits handled, by reason.", "counter", nil}
	for _, reason := range slices.Sorted(mapKeys(m.Exits)) {
		exits.samples = append(exits.samples, sample{[]string{"reason", reason}, float64(m.Exits[reason])})
	}
	bytes := family{"vmm_device_bytes_total", "Bytes a device moved.", "counter", nil}
	ops := family{"vmm_device_ops_total", "Requests (block) or frames (net) a device handled.", "counter", nil}
	errs := family{"vmm_device_errors_total", "Requests a device failed.", "counter", nil}
	for _, d := range m.Devices {
		l := []string{"device", d.Name, "kind", d.Kind}
		bytes.samples = append(bytes.samples, sample{l, float64(d.Bytes)})
		ops.samples = append(ops.samples, sample{l, float64(d.Ops)})
		errs.samples = append(errs.samples, sample{l, float64(d.Errors)})
	}
	vcpu := family{"vmm_vcpu_seconds_total", "Time a vCPU spent running the guest.", "counter", nil}
	for i, t := range m.VCPUTime {
		vcpu.samples = append(vcpu.samples, sample{[]string{"vcpu", strconv.Itoa(i)}, t.Seconds()})
	}
	return append(fs, exits, bytes, ops, errs, vcpu)
}

func mapKeys(m map[string]uint64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// writeExposition writes families in the text format. A family without
// samples is left out, as client_golang does.
func writeExposition(w io.Writer, fs []family) error {
	bw := bufio.NewWriter(w)
	for _, f := range fs {
		if len(f.samples) == 0 {
			continue
		}
		bw.WriteString("# HELP " + f.name + " " + helpEscaper.Replace(f.help) + "\n")
		bw.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
		for _, s := range f.samples {
			bw.WriteString(f.name)
			if len(s.labels) > 0 {
				bw.WriteByte('{')
				for i := 0; i < len(s.labels); i += 2 {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(s.labels[i] + `="` + labelEscaper.Replace(s.labels[i+1]) + `"`)
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(strconv.FormatFloat(s.value, 'g', -1, 64))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// The text format's escapes: help text escapes backslash and newline,
// label values also the double quote.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)
