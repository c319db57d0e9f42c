package devices

import (
	"bytes"
	"testing"
)

// readPorts reads every register of a port device one byte at a time, the
// guest's view that a restored device must reproduce.
func readPorts(d Device, n uint64) []byte {
	out := make([]byte, n)
	for off := range n {
		d.Read(off, out[off:off+1])
	}
	return out
}

func TestSerialStateRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		writes [][2]uint8 // offset, value
		input  []byte
	}{
		{"reset", nil, nil},
		{"divisor and line", [][2]uint8{{uartLCR, lcrDLAB | 3}, {uartRBR, 1}, {uartIER, 0}, {uartLCR, 3}, {uartSCR, 0x5a}}, nil},
		{"interrupts and input", [][2]uint8{{uartMCR, mcrOUT2 | mcrDTR}, {uartIER, ierRDI | ierTHRI}, {uartIIR, 0x01}}, []byte("abc")},
		{"loopback", [][2]uint8{{uartMCR, mcrLoop | mcrRTS}, {uartRBR, 'x'}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := NewSerial(&bytes.Buffer{}, nil)
			for _, w := range tc.writes {
				src.Write(uint64(w[0]), []byte{w[1]})
			}
			if len(tc.input) > 0 {
				src.Input(tc.input)
			}
			st := src.State()
			dst := NewSerial(&bytes.Buffer{}, nil)
			if err := dst.SetState(st); err != nil {
				t.Fatal(err)
			}
			if got := dst.State(); !bytes.Equal(got.RX, st.RX) || got.IER != st.IER || got.LCR != st.LCR || got.MCR != st.MCR ||
				got.DLL != st.DLL || got.DLM != st.DLM || got.SCR != st.SCR || got.FCR != st.FCR || got.THRPending != st.THRPending {
				t.Fatalf("state after SetState = %+v, want %+v", got, st)
			}
			// Reading IIR and RBR consumes state, so compare the guest's
			// view last and on both sides alike.
			if a, b := readPorts(src, SerialPorts), readPorts(dst, SerialPorts); !bytes.Equal(a, b) {
				t.Fatalf("registers differ: source %x, restored %x", a, b)
			}
		})
	}
}

func TestSerialSetStateRefusesOversizedInput(t *testing.T) {
	s := NewSerial(&bytes.Buffer{}, nil)
	if err := s.SetState(SerialState{RX: make([]byte, rxLimit+1)}); err == nil {
		t.Fatal("SetState accepted more receive bytes than the UART holds")
	}
}

func TestI8042StateRoundTrip(t *testing.T) {
	src := NewI8042(nil)
	src.Write(i8042Command, []byte{i8042CmdWrCTR})
	src.Write(i8042Data, []byte{0x47})
	src.Write(i8042Command, []byte{i8042CmdReadCTR}) // leaves the CTR in the output buffer
	dst := NewI8042(nil)
	dst.SetState(src.State())
	if a, b := readPorts(src, I8042Ports), readPorts(dst, I8042Ports); !bytes.Equal(a, b) {
		t.Fatalf("ports differ: source %x, restored %x", a, b)
	}
	if dst.State() != src.State() {
		t.Fatalf("state %+v, want %+v", dst.State(), src.State())
	}
}

func TestACPIPMStateRoundTrip(t *testing.T) {
	src := NewACPIPM(5, 0xf, nil, nil)
	src.Write(acpiPM1Enable, []byte{byte(pm1PowerButton & 0xff)})
	src.Write(acpiPM1Enable+1, []byte{byte(pm1PowerButton >> 8)})
	if !src.PressPowerButton() {
		t.Fatal("power button press not enabled")
	}
	src.SetState(ACPIPMState{SleepStatus: wakeStatus, PM1Status: src.State().PM1Status, PM1Enable: src.State().PM1Enable, PM1Control: 1 << 1})
	var sci []bool
	dst := NewACPIPM(5, 0xf, nil, nil)
	dst.SetSCI(func(level bool) { sci = append(sci, level) })
	dst.SetState(src.State())
	if a, b := readPorts(src, ACPIPMPorts), readPorts(dst, ACPIPMPorts); !bytes.Equal(a, b) || a[acpiSleepStatus] != wakeStatus {
		t.Fatalf("ports: source %x, restored %x", a, b)
	}
	if len(sci) != 1 || !sci[0] {
		t.Fatalf("SCI after restoring a pending power button: %v, want asserted once", sci)
	}
	if dst.State() != src.State() {
		t.Fatalf("state %+v, want %+v", dst.State(), src.State())
	}
}

func TestBusDeviceAt(t *testing.T) {
	b := NewBus("pio")
	k := NewI8042(nil)
	if err := b.Register(I8042Base, I8042Ports, k); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr uint64
		ok   bool
	}{{I8042Base, true}, {I8042Base + I8042Ports - 1, true}, {I8042Base + I8042Ports, false}, {0, false}} {
		d, ok := b.DeviceAt(tc.addr)
		if ok != tc.ok || (ok && d != Device(k)) {
			t.Errorf("DeviceAt(%#x) = %v, %v; want ok=%v", tc.addr, d, ok, tc.ok)
		}
	}
}
