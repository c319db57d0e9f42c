package api

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descState   = prometheus.NewDesc("vmm_state", "The vm's lifecycle state (1 for the current one).", []string{"state"}, nil)
	descUptime  = prometheus.NewDesc("vmm_uptime_seconds", "Time since the guest started.", nil, nil)
	descVCPUs   = prometheus.NewDesc("vmm_vcpus", "Number of vCPUs.", nil, nil)
	descMemory  = prometheus.NewDesc("vmm_memory_bytes", "Guest RAM.", nil, nil)
	descExits   = prometheus.NewDesc("vmm_exits_total", "VM exits handled, by reason.", []string{"reason"}, nil)
	descBytes   = prometheus.NewDesc("vmm_device_bytes_total", "Bytes a device moved.", []string{"kind", "device"}, nil)
	descOps     = prometheus.NewDesc("vmm_device_ops_total", "Requests (block) or frames (net) a device handled.", []string{"kind", "device"}, nil)
	descErrors  = prometheus.NewDesc("vmm_device_errors_total", "Requests a device failed.", []string{"kind", "device"}, nil)
	descVCPUSec = prometheus.NewDesc("vmm_vcpu_seconds_total", "Time a vCPU spent running the guest.", []string{"vcpu"}, nil)
)

// collector exposes one machine's Metrics; m is nil before the start.
type collector struct {
	m  Machine
	st Status
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descUptime, descVCPUs, descMemory, descExits, descBytes, descOps, descErrors, descVCPUSec} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, c.st.State)
	ch <- prometheus.MustNewConstMetric(descVCPUs, prometheus.GaugeValue, float64(c.st.VCPUs))
	ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(c.st.MemoryBytes))
	if c.m == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descUptime, prometheus.GaugeValue, c.st.Uptime.Seconds())
	mt := c.m.Metrics()
	for reason, n := range mt.Exits {
		ch <- prometheus.MustNewConstMetric(descExits, prometheus.CounterValue, float64(n), reason)
	}
	for _, d := range mt.Devices {
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(d.Bytes), d.Kind, d.Name)
		ch <- prometheus.MustNewConstMetric(descOps, prometheus.CounterValue, float64(d.Ops), d.Kind, d.Name)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(d.Errors), d.Kind, d.Name)
	}
	for i, t := range mt.VCPUTime {
		ch <- prometheus.MustNewConstMetric(descVCPUSec, prometheus.CounterValue, t.Seconds(), strconv.Itoa(i))
	}
}
