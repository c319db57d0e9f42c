package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	s := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", s(7), 95, 7},
		{"median of odd, unsorted", s(5, 1, 3), 50, 3},
		{"median of even is the lower middle", s(4, 1, 3, 2), 50, 2},
		{"p95 of 20 is the 19th", s(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 95, 19},
		{"p95 of 5 is the largest", s(1, 2, 3, 4, 5), 95, 5},
		{"p100", s(1, 9, 3), 100, 9},
		{"p0 is the smallest", s(4, 2, 8), 0, 2},
	} {
		if got := percentile(tc.ds, tc.p); got != tc.want {
			t.Errorf("%s: percentile(%v, %v) = %v, want %v", tc.name, tc.ds, tc.p, got, tc.want)
		}
	}
}
