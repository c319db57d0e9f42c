package aml

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every encoding error: a malformed name, a value
// out of range for its encoding, a package that is too large.
var ErrInvalid = errors.New("invalid AML")

// AML opcodes and prefixes (ACPI 6.5, section 20.3).
const (
	zeroOp        = 0x00
	oneOp         = 0x01
	nameOp        = 0x08
	bytePrefix    = 0x0A
	wordPrefix    = 0x0B
	dwordPrefix   = 0x0C
	stringPrefix  = 0x0D
	qwordPrefix   = 0x0E
	scopeOp       = 0x10
	bufferOp      = 0x11
	packageOp     = 0x12
	methodOp      = 0x14
	dualNamePfx   = 0x2E
	multiNamePfx  = 0x2F
	extOpPrefix   = 0x5B
	deviceOp      = 0x82 // after extOpPrefix
	rootChar      = '\\'
	parentChar    = '^'
	returnOp      = 0xA4
	maxPkgLength  = 1<<28 - 1
	maxPackageLen = 255
)

// Object is an AML term: something that can appear in a TermList or as a
// data object.
type Object interface {
	encode(e *encoder)
}

type encoder struct {
	buf []byte
	err error
}

func (e *encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
}

// Encode returns the AML for objs in order, as a TermList.
func Encode(objs ...Object) ([]byte, error) {
	e := &encoder{}
	for _, o := range objs {
		o.encode(e)
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.buf, nil
}

// withPkgLength encodes body with a PkgLength prefix: the length counts
// itself and the body, in one to four bytes.
func (e *encoder) withPkgLength(body func(e *encoder)) {
	inner := &encoder{}
	body(inner)
	if inner.err != nil {
		e.fail("%v", inner.err)
		return
	}
	pl, err := pkgLength(len(inner.buf))
	if err != nil {
		e.fail("%v", err)
		return
	}
	e.buf = append(e.buf, pl...)
	e.buf = append(e.buf, inner.buf...)
}

// pkgLength encodes the PkgLength for a body of n bytes.
func pkgLength(n int) ([]byte, error) {
	switch {
	case n+1 <= 0x3F:
		return []byte{byte(n + 1)}, nil
	case n+2 < 1<<12:
		l := n + 2
		return []byte{0x40 | byte(l&0xF), byte(l >> 4)}, nil
	case n+3 < 1<<20:
		l := n + 3
		return []byte{0x80 | byte(l&0xF), byte(l >> 4), byte(l >> 12)}, nil
	case n+4 <= maxPkgLength:
		l := n + 4
		return []byte{0xC0 | byte(l&0xF), byte(l >> 4), byte(l >> 12), byte(l >> 20)}, nil
	}
	return nil, fmt.Errorf("%w: package of %d bytes exceeds PkgLength", ErrInvalid, n)
}

// nameSeg checks and pads one segment: a leading letter or underscore, then
// letters, digits or underscores; shorter segments are padded with '_'.
func nameSeg(s string) ([]byte, error) {
	if len(s) == 0 || len(s) > 4 {
		return nil, fmt.Errorf("%w: name segment %q: want 1 to 4 characters", ErrInvalid, s)
	}
	seg := []byte("____")
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return nil, fmt.Errorf("%w: name segment %q: character %q", ErrInvalid, s, c)
		}
		seg[i] = c
	}
	return seg, nil
}

// nameString encodes a path: optional "\" or "^" prefixes, then segments
// separated by dots ("\_SB.PCI0", "_S5", "^^FOO").
func nameString(path string) ([]byte, error) {
	var out []byte
	rest := path
	if strings.HasPrefix(rest, `\`) {
		out = append(out, rootChar)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			out = append(out, parentChar)
			rest = rest[1:]
		}
	}
	if rest == "" {
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: empty name", ErrInvalid)
		}
		return append(out, zeroOp), nil // NullName
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 2:
		out = append(out, dualNamePfx)
	case len(parts) > 2:
		if len(parts) > 255 {
			return nil, fmt.Errorf("%w: name %q has too many segments", ErrInvalid, path)
		}
		out = append(out, multiNamePfx, byte(len(parts)))
	}
	for _, p := range parts {
		seg, err := nameSeg(p)
		if err != nil {
			return nil, fmt.Errorf("name %q: %w", path, err)
		}
		out = append(out, seg...)
	}
	return out, nil
}

func (e *encoder) name(path string) {
	b, err := nameString(path)
	if err != nil {
		e.fail("%v", err)
		return
	}
	e.buf = append(e.buf, b...)
}

// Integer is an AML integer constant, encoded in the smallest form:
// ZeroOp, OneOp, or a byte/word/dword/qword prefix.
type Integer uint64

func (i Integer) encode(e *encoder) {
	v := uint64(i)
	switch {
	case v == 0:
		e.buf = append(e.buf, zeroOp)
	case v == 1:
		e.buf = append(e.buf, oneOp)
	case v <= 0xFF:
		e.buf = append(e.buf, bytePrefix, byte(v))
	case v <= 0xFFFF:
		e.buf = binary.LittleEndian.AppendUint16(append(e.buf, wordPrefix), uint16(v))
	case v <= 0xFFFF_FFFF:
		e.buf = binary.LittleEndian.AppendUint32(append(e.buf, dwordPrefix), uint32(v))
	default:
		e.buf = binary.LittleEndian.AppendUint64(append(e.buf, qwordPrefix), v)
	}
}

// String is an AML ASCII string constant.
type String string

func (s String) encode(e *encoder) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7F {
			e.fail("string %q: byte %#x is not 7-bit ASCII without NUL", string(s), s[i])
			return
		}
	}
	e.buf = append(append(append(e.buf, stringPrefix), s...), 0)
}

// Buffer is an AML buffer with constant contents.
type Buffer []byte

func (b Buffer) encode(e *encoder) {
	e.buf = append(e.buf, bufferOp)
	e.withPkgLength(func(e *encoder) {
		Integer(len(b)).encode(e)
		e.buf = append(e.buf, b...)
	})
}

type pkg []Object

// Package is an AML package of data objects.
func Package(elems ...Object) Object { return pkg(elems) }

func (p pkg) encode(e *encoder) {
	if len(p) > maxPackageLen {
		e.fail("package of %d elements: at most %d", len(p), maxPackageLen)
		return
	}
	e.buf = append(e.buf, packageOp)
	e.withPkgLength(func(e *encoder) {
		e.buf = append(e.buf, byte(len(p)))
		for _, o := range p {
			o.encode(e)
		}
	})
}

type named struct {
	path string
	obj  Object
}

// Name declares path with the value obj.
func Name(path string, obj Object) Object { return named{path, obj} }

func (n named) encode(e *encoder) {
	e.buf = append(e.buf, nameOp)
	e.name(n.path)
	n.obj.encode(e)
}

type scope struct {
	op   []byte
	path string
	body []Object
}

// Scope opens the namespace scope path and places body in it.
func Scope(path string, body ...Object) Object { return scope{[]byte{scopeOp}, path, body} }

// Device declares a device object path containing body.
func Device(path string, body ...Object) Object {
	return scope{[]byte{extOpPrefix, deviceOp}, path, body}
}

func (s scope) encode(e *encoder) {
	e.buf = append(e.buf, s.op...)
	e.withPkgLength(func(e *encoder) {
		e.name(s.path)
		for _, o := range s.body {
			o.encode(e)
		}
	})
}

type method struct {
	path       string
	args       int
	serialized bool
	body       []Object
}

// Method declares a control method with args arguments (0 to 7).
func Method(path string, args int, serialized bool, body ...Object) Object {
	return method{path, args, serialized, body}
}

func (m method) encode(e *encoder) {
	if m.args < 0 || m.args > 7 {
		e.fail("method %s: %d arguments, at most 7", m.path, m.args)
		return
	}
	flags := byte(m.args)
	if m.serialized {
		flags |= 1 << 3
	}
	e.buf = append(e.buf, methodOp)
	e.withPkgLength(func(e *encoder) {
		e.name(m.path)
		e.buf = append(e.buf, flags)
		for _, o := range m.body {
			o.encode(e)
		}
	})
}

type ret struct{ v Object }

// Return returns v from the enclosing method.
func Return(v Object) Object { return ret{v} }

func (r ret) encode(e *encoder) {
	e.buf = append(e.buf, returnOp)
	r.v.encode(e)
}

// EISAID compresses a PNP ID such as "PNP0A08" (three capital letters, four
// hex digits) into the 32-bit integer form ASL's EisaId() produces.
func EISAID(id string) (Integer, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("%w: EISA ID %q: want 3 letters and 4 hex digits", ErrInvalid, id)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("%w: EISA ID %q: %q is not a capital letter", ErrInvalid, id, c)
		}
		v = v<<5 | uint32(c-0x40)
	}
	for i := 3; i < 7; i++ {
		c := id[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%w: EISA ID %q: %q is not an upper-case hex digit", ErrInvalid, id, c)
		}
		v = v<<4 | uint32(d)
	}
	// Stored big-endian in a little-endian dword.
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return Integer(binary.LittleEndian.Uint32(b[:])), nil
}

type eisaid string

// EISAIDObject is EISAID as an Object; an invalid id fails the Encode.
func EISAIDObject(id string) Object { return eisaid(id) }

func (s eisaid) encode(e *encoder) {
	v, err := EISAID(string(s))
	if err != nil {
		e.fail("%v", err)
		return
	}
	// Always a dword, as ASL compilers emit it.
	e.buf = binary.LittleEndian.AppendUint32(append(e.buf, dwordPrefix), uint32(v))
}
