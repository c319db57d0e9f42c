package network

import (
	"strings"
	"testing"
)

func TestInterfaceNames(t *testing.T) {
	const hexID = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"bridge keeps hex prefix", BridgeName(hexID), "kbr-0123456789a"},
		{"vxlan keeps hex prefix", VXLANName(hexID), "kvx-0123456789a"},
		{"tap keeps hex prefix", TapName("fedcba9876543210"), "ktp-fedcba98765"},
		// Non-hex or short ids are hashed: sha256("net-a") starts with these characters.
		{"short id hashed", BridgeName("net-a"), "kbr-" + shortID("net-a")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestInterfaceNamesFitAndDiffer(t *testing.T) {
	ids := []string{"a", "net-a", "net-ab", "p1", "0123456789ABCDEF", "0123456789abc/x", strings.Repeat("z", 64),
		"0123456789abcdef0123456789abcdef", "0123456789bbcdef"}
	seen := map[string]string{}
	for _, id := range ids {
		for _, n := range []string{BridgeName(id), VXLANName(id), TapName(id)} {
			if len(n) > IFNameMax {
				t.Errorf("%q -> %q is %d bytes", id, n, len(n))
			}
			for _, c := range n {
				if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
					t.Errorf("%q -> %q has character %q", id, n, c)
				}
			}
			// Only ids sharing an 11-character hex prefix map to the same
			// name; the API's 128-bit random ids make that a 2^-44 event.
			if prev, ok := seen[n]; ok {
				t.Errorf("%q and %q both map to %q", prev, id, n)
			}
			seen[n] = id
		}
	}
	if got := shortID("0123456789ABCDEF"); got == "0123456789A" {
		t.Fatal("upper-case id used verbatim")
	}
}

func FuzzInterfaceNames(f *testing.F) {
	for _, s := range []string{"", "a", "0123456789abcdef", "x/y z", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		b, v, tp := BridgeName(id), VXLANName(id), TapName(id)
		for _, n := range []string{b, v, tp} {
			if len(n) != IFNameMax {
				t.Fatalf("%q -> %q", id, n)
			}
			if !isLowerHex(n[4:]) {
				t.Fatalf("%q -> %q: suffix is not lower-case hex", id, n)
			}
		}
		if b[4:] != v[4:] || b[4:] != tp[4:] {
			t.Fatalf("%q: kinds disagree on the suffix: %q %q %q", id, b, v, tp)
		}
		if len(id) >= idChars && isLowerHex(id) && b[4:] != id[:idChars] {
			t.Fatalf("hex id %q not kept readable: %q", id, b)
		}
	})
}
