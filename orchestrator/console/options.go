package console

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
)

// MaxOffset bounds offset and tail: far beyond any retained console log,
// small enough that offset arithmetic cannot overflow.
const MaxOffset = 1 << 40

// ErrBadQuery means a console query parameter is malformed (HTTP 400).
var ErrBadQuery = errors.New("console: bad query")

// Options say which part of a console log to send.
type Options struct {
	// Follow keeps the stream open and sends bytes as they are written.
	Follow bool
	// Offset, if not negative, starts at this byte of the retained log (the
	// rotated copies, oldest first, then the current log).
	Offset int64
	// Tail, if not negative, starts this many bytes before the end.
	Tail int64
}

// Whole is the default: the whole retained log, without following.
func Whole() Options { return Options{Offset: -1, Tail: -1} }

// ParseQuery reads offset, tail and follow from a query. Unknown
// parameters are ignored; a parameter given twice, a value that is not a
// non-negative integer up to MaxOffset (follow: a boolean), or both offset
// and tail are refused with ErrBadQuery.
func ParseQuery(q url.Values) (Options, error) {
	o := Whole()
	var err error
	if o.Offset, err = parseCount(q, "offset"); err != nil {
		return Whole(), err
	}
	if o.Tail, err = parseCount(q, "tail"); err != nil {
		return Whole(), err
	}
	if o.Offset >= 0 && o.Tail >= 0 {
		return Whole(), fmt.Errorf("%w: give offset or tail, not both", ErrBadQuery)
	}
	if v, ok := q["follow"]; ok {
		if len(v) != 1 {
			return Whole(), fmt.Errorf("%w: follow given %d times", ErrBadQuery, len(v))
		}
		// A bare ?follow means yes, as curl users expect.
		if v[0] == "" {
			o.Follow = true
		} else if o.Follow, err = strconv.ParseBool(v[0]); err != nil {
			return Whole(), fmt.Errorf("%w: follow %q is not a boolean", ErrBadQuery, v[0])
		}
	}
	return o, nil
}

func parseCount(q url.Values, name string) (int64, error) {
	v, ok := q[name]
	if !ok {
		return -1, nil
	}
	if len(v) != 1 {
		return -1, fmt.Errorf("%w: %s given %d times", ErrBadQuery, name, len(v))
	}
	// ParseUint refuses signs, spaces and other bases; the bound keeps
	// offset sums far from overflow.
	n, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil || n > MaxOffset {
		return -1, fmt.Errorf("%w: %s %q is not an integer from 0 to %d", ErrBadQuery, name, v[0], int64(MaxOffset))
	}
	return int64(n), nil
}

// Query is the canonical query for o; ParseQuery(o.Query()) returns o for
// any o ParseQuery can return.
func (o Options) Query() url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.Offset >= 0 {
		q.Set("offset", strconv.FormatInt(o.Offset, 10))
	}
	if o.Tail >= 0 {
		q.Set("tail", strconv.FormatInt(o.Tail, 10))
	}
	return q
}

// Start is the first byte to send of a log of size bytes; ErrOffsetRange
// if Offset is past its end.
func (o Options) Start(size int64) (int64, error) {
	switch {
	case o.Offset > size:
		return 0, fmt.Errorf("%w: offset %d is past the end of the log (%d bytes)", ErrOffsetRange, o.Offset, size)
	case o.Offset >= 0:
		return o.Offset, nil
	case o.Tail >= 0:
		return max(0, size-o.Tail), nil
	}
	return 0, nil
}

// ErrOffsetRange means an offset lies past the end of the log (HTTP 416).
var ErrOffsetRange = errors.New("console: offset out of range")

// HeaderOffset, on a console response, is the offset in the retained log
// of the first byte sent: with the bytes received, where to resume.
const HeaderOffset = "X-Kvmstack-Console-Offset"
