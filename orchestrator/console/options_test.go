package console

import (
	"errors"
	"net/url"
	"testing"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		q    string
		want Options
		err  error
	}{
		{"", Options{Offset: -1, Tail: -1}, nil},
		{"follow=1&tail=4096", Options{Follow: true, Offset: -1, Tail: 4096}, nil},
		{"follow&offset=0", Options{Follow: true, Offset: 0, Tail: -1}, nil},
		{"follow=false&offset=17", Options{Offset: 17, Tail: -1}, nil},
		{"tail=0", Options{Offset: -1, Tail: 0}, nil},
		{"offset=1099511627776", Options{Offset: MaxOffset, Tail: -1}, nil},
		{"index=3&wait=5s&tail=1", Options{Offset: -1, Tail: 1}, nil},
		{"offset=1099511627777", Options{}, ErrBadQuery},
		{"offset=-1", Options{}, ErrBadQuery},
		{"offset=+1", Options{}, ErrBadQuery},
		{"offset=0x10", Options{}, ErrBadQuery},
		{"offset=", Options{}, ErrBadQuery},
		{"offset=%201", Options{}, ErrBadQuery},
		{"tail=18446744073709551616", Options{}, ErrBadQuery},
		{"offset=1&tail=1", Options{}, ErrBadQuery},
		{"offset=1&offset=2", Options{}, ErrBadQuery},
		{"follow=1&follow=0", Options{}, ErrBadQuery},
		{"follow=yes", Options{}, ErrBadQuery},
	}
	for _, tc := range tests {
		q, err := url.ParseQuery(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseQuery(q)
		if !errors.Is(err, tc.err) || tc.err == nil && got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v, %v", tc.q, got, err, tc.want, tc.err)
		}
	}
}

func TestStart(t *testing.T) {
	tests := []struct {
		o          Options
		size       int64
		want       int64
		outOfRange bool
	}{
		{Whole(), 100, 0, false},
		{Options{Offset: 40, Tail: -1}, 100, 40, false},
		{Options{Offset: 100, Tail: -1}, 100, 100, false},
		{Options{Offset: 101, Tail: -1}, 100, 0, true},
		{Options{Offset: -1, Tail: 30}, 100, 70, false},
		{Options{Offset: -1, Tail: 300}, 100, 0, false},
		{Options{Offset: -1, Tail: 0}, 100, 100, false},
	}
	for _, tc := range tests {
		got, err := tc.o.Start(tc.size)
		if errors.Is(err, ErrOffsetRange) != tc.outOfRange || err == nil && got != tc.want {
			t.Errorf("%+v of %d: %d, %v; want %d (out of range %v)", tc.o, tc.size, got, err, tc.want, tc.outOfRange)
		}
	}
}

// FuzzParseQuery: any query either fails with ErrBadQuery or gives options
// within bounds whose canonical query parses back to the same options.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "follow=1&tail=4096", "offset=12", "follow", "offset=1&tail=2", "tail=-5", "offset=99999999999999999999",
		"follow=TRUE&offset=0", "tail=%00", "a=b&tail=1&tail=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		o, err := ParseQuery(q)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("%q: error %v does not wrap ErrBadQuery", raw, err)
			}
			return
		}
		if o.Offset < -1 || o.Offset > MaxOffset || o.Tail < -1 || o.Tail > MaxOffset || o.Offset >= 0 && o.Tail >= 0 {
			t.Fatalf("%q: out of bounds %+v", raw, o)
		}
		back, err := ParseQuery(o.Query())
		if err != nil || back != o {
			t.Fatalf("%q: %+v → %q → %+v, %v", raw, o, o.Query().Encode(), back, err)
		}
		if s, err := o.Start(MaxOffset); err != nil || s < 0 || s > MaxOffset {
			t.Fatalf("%q: start %d, %v", raw, s, err)
		}
	})
}
