package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every collector a server exports.
type Metrics struct {
	Registry *prometheus.Registry

	APIRequests *prometheus.CounterVec
	APILatency  *prometheus.HistogramVec

	RaftApplyLatency prometheus.Histogram
	RaftApplies      *prometheus.CounterVec

	Placements       prometheus.Counter
	NoValidHost      prometheus.Counter
	PlacementRejects prometheus.Counter
	SchedulerBatch   prometheus.Histogram
}

// New creates and registers the collectors; raftStats is polled at scrape
// time for the Raft gauges.
func New(raftStats func() map[string]float64) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvmstack_api_requests_total", Help: "API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		APILatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvmstack_api_request_seconds", Help: "API request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		RaftApplyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvmstack_raft_apply_seconds", Help: "Time from proposing a command to it being applied on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		RaftApplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvmstack_raft_applies_total", Help: "Commands proposed by this server, by result.",
		}, []string{"result"}),
		Placements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvmstack_scheduler_placements_total", Help: "Instances placed on a host.",
		}),
		NoValidHost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvmstack_scheduler_no_valid_host_total", Help: "Instances failed because no host passed the filters.",
		}),
		PlacementRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvmstack_scheduler_rejected_total", Help: "Placements the FSM rejected on re-check.",
		}),
		SchedulerBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvmstack_scheduler_batch_seconds", Help: "Time to compute and commit one placement batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	r.MustRegister(m.APIRequests, m.APILatency, m.RaftApplyLatency, m.RaftApplies, m.Placements, m.NoValidHost,
		m.PlacementRejects, m.SchedulerBatch, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if raftStats != nil {
		r.MustRegister(&raftCollector{stats: raftStats})
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

type raftCollector struct{ stats func() map[string]float64 }

var raftDesc = prometheus.NewDesc("kvmstack_raft", "Raft node statistics (state: 0 follower, 1 candidate, 2 leader, 3 shutdown).", []string{"stat"}, nil)

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) { ch <- raftDesc }

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	for k, v := range c.stats() {
		ch <- prometheus.MustNewConstMetric(raftDesc, prometheus.GaugeValue, v, k)
	}
}
