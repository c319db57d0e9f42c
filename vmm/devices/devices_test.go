package devices

import (
	"bytes"
	"testing"
)

type recorder struct{ reads, writes []uint64 }

func (r *recorder) Read(off uint64, d []byte) {
	r.reads = append(r.reads, off)
	for i := range d {
		d[i] = byte(off)
	}
}
func (r *recorder) Write(off uint64, d []byte) { r.writes = append(r.writes, off) }

func TestBus(t *testing.T) {
	b := NewBus("pio")
	a, c := &recorder{}, &recorder{}
	if err := b.Register(0x3f8, 8, a); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(0x60, 5, c); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ base, size uint64 }{{0x3fc, 8}, {0x3f0, 9}, {0x3f8, 1}, {0x10, 0}, {^uint64(0), 2}} {
		if err := b.Register(bad.base, bad.size, &recorder{}); err == nil {
			t.Errorf("Register(%#x, %d) accepted an overlapping or empty range", bad.base, bad.size)
		}
	}
	tests := []struct {
		addr uint64
		n    int
		ok   bool
		want byte
	}{
		{0x3f8, 1, true, 0}, {0x3ff, 1, true, 7}, {0x3fe, 2, true, 6}, {0x3ff, 2, false, 0xff},
		{0x400, 1, false, 0xff}, {0x64, 1, true, 4}, {0x5f, 1, false, 0xff}, {0, 4, false, 0xff},
	}
	for _, tt := range tests {
		d := make([]byte, tt.n)
		if got := b.Read(tt.addr, d); got != tt.ok || d[0] != tt.want {
			t.Errorf("Read(%#x, %d) = %v %x, want %v %x", tt.addr, tt.n, got, d, tt.ok, tt.want)
		}
		if got := b.Write(tt.addr, d); got != tt.ok {
			t.Errorf("Write(%#x) = %v, want %v", tt.addr, got, tt.ok)
		}
	}
}

func rd(d Device, off uint64) byte {
	b := []byte{0}
	d.Read(off, b)
	return b[0]
}

func wr(d Device, off uint64, v byte) { d.Write(off, []byte{v}) }

func TestSerialOutputAndTHRInterrupt(t *testing.T) {
	var out bytes.Buffer
	irqs := 0
	s := NewSerial(&out, func() { irqs++ })
	wr(s, uartMCR, mcrOUT2|mcrDTR|mcrRTS)
	if got := rd(s, uartIIR); got&0x0f != iirNoInt {
		t.Fatalf("IIR before enabling = %#x, want no interrupt", got)
	}
	wr(s, uartIER, ierTHRI)
	if irqs != 1 {
		t.Fatalf("enabling THRI raised %d edges, want 1", irqs)
	}
	if got := rd(s, uartIIR); got&0x0f != iirTHRI {
		t.Fatalf("IIR = %#x, want THRI", got)
	}
	if got := rd(s, uartIIR); got&0x0f != iirNoInt {
		t.Fatalf("IIR after read = %#x, want THRI cleared", got)
	}
	for _, c := range []byte("hi\n") {
		wr(s, uartRBR, c)
	}
	if out.String() != "hi\n" || irqs != 4 {
		t.Fatalf("out=%q irqs=%d, want \"hi\\n\" and 4", out.String(), irqs)
	}
	if got := rd(s, uartLSR); got&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Fatalf("LSR = %#x, transmitter should always be empty", got)
	}
	// Without OUT2 the line is gated off.
	wr(s, uartMCR, 0)
	wr(s, uartRBR, 'x')
	if irqs != 4 {
		t.Fatalf("interrupt raised with OUT2 clear")
	}
}

func TestSerialProbeAndDivisor(t *testing.T) {
	s := NewSerial(nil, nil)
	wr(s, uartSCR, 0xa5)
	if rd(s, uartSCR) != 0xa5 {
		t.Fatal("scratch register does not hold its value")
	}
	wr(s, uartLCR, lcrDLAB)
	wr(s, uartRBR, 0x01)
	wr(s, uartIER, 0x02)
	if rd(s, uartRBR) != 0x01 || rd(s, uartIER) != 0x02 {
		t.Fatal("divisor latch not readable with DLAB")
	}
	wr(s, uartLCR, 0x03)
	if rd(s, uartIER) != 0 {
		t.Fatal("IER changed by a divisor write")
	}
	// Loopback: the autoconfig test expects MSR to mirror MCR.
	wr(s, uartMCR, mcrLoop|mcrOUT2|mcrOUT1|mcrRTS|mcrDTR)
	if got := rd(s, uartMSR) & 0xf0; got != msrDCD|msrRI|msrCTS|msrDSR {
		t.Fatalf("loopback MSR = %#x", got)
	}
	wr(s, uartRBR, 0x5a)
	if rd(s, uartLSR)&lsrDR == 0 || rd(s, uartRBR) != 0x5a {
		t.Fatal("loopback byte not received")
	}
	wr(s, uartIIR, 0x01)
	if rd(s, uartIIR)&iirFIFO != iirFIFO {
		t.Fatal("FIFO enable not reflected in IIR")
	}
}

func TestSerialInput(t *testing.T) {
	irqs := 0
	s := NewSerial(nil, func() { irqs++ })
	wr(s, uartMCR, mcrOUT2)
	wr(s, uartIER, ierRDI)
	s.Input([]byte("ab"))
	if irqs == 0 {
		t.Fatal("no interrupt for received data")
	}
	if rd(s, uartIIR)&0x0f != iirRDI {
		t.Fatal("IIR does not report received data")
	}
	if rd(s, uartRBR) != 'a' || rd(s, uartRBR) != 'b' {
		t.Fatal("wrong bytes received")
	}
	if rd(s, uartLSR)&lsrDR != 0 || rd(s, uartRBR) != 0 {
		t.Fatal("data ready after the queue emptied")
	}
	done := make(chan struct{})
	go func() { s.Input(make([]byte, rxLimit+10)); close(done) }()
	// The producer blocks at the limit and finishes only once the guest
	// side has drained enough.
	for drained := false; !drained; {
		select {
		case <-done:
			drained = true
		default:
			rd(s, uartRBR)
		}
	}
	s.mu.Lock()
	if len(s.rx) > rxLimit {
		t.Errorf("queue grew to %d", len(s.rx))
	}
	s.mu.Unlock()
}

func TestI8042Reset(t *testing.T) {
	tests := []struct {
		name  string
		seq   [][2]byte // offset, value
		reset bool
	}{
		{"pulseReset", [][2]byte{{4, 0xfe}}, true},
		{"outputPortResetLow", [][2]byte{{4, 0xd1}, {0, 0xfe}}, true},
		{"outputPortResetHigh", [][2]byte{{4, 0xd1}, {0, 0xdf}}, false},
		{"writeCTR", [][2]byte{{4, 0x60}, {0, 0x47}}, false},
		{"selfTest", [][2]byte{{4, 0xaa}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			k := NewI8042(func() { resets++ })
			for _, op := range tt.seq {
				wr(k, uint64(op[0]), op[1])
			}
			if (resets > 0) != tt.reset {
				t.Fatalf("resets = %d, want reset %v", resets, tt.reset)
			}
		})
	}
	k := NewI8042(nil)
	wr(k, 4, 0xaa)
	if rd(k, 4)&i8042StatusOBF == 0 || rd(k, 0) != 0x55 || rd(k, 4)&i8042StatusOBF != 0 {
		t.Fatal("self-test answer not delivered through the output buffer")
	}
	wr(k, 4, 0x60)
	wr(k, 0, 0x47)
	wr(k, 4, 0x20)
	if rd(k, 0) != 0x47 {
		t.Fatal("CTR not stored")
	}
}

func TestACPIPM(t *testing.T) {
	tests := []struct {
		name         string
		off          uint64
		v            byte
		off1, reset1 int
	}{
		{"S5", acpiSleepControl, 5<<2 | sleepEnable, 1, 0},
		{"S5WithoutEnable", acpiSleepControl, 5 << 2, 0, 0},
		{"S3", acpiSleepControl, 3<<2 | sleepEnable, 0, 0},
		{"reset", acpiReset, 1, 0, 1},
		{"wrongResetValue", acpiReset, 2, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, reset := 0, 0
			a := NewACPIPM(5, 1, func() { off++ }, func() { reset++ })
			wr(a, tt.off, tt.v)
			a.Write(tt.off, []byte{tt.v, 0}) // wide accesses are ignored
			if off != tt.off1 || reset != tt.reset1 {
				t.Fatalf("powerOff=%d reset=%d, want %d %d", off, reset, tt.off1, tt.reset1)
			}
		})
	}
}

func TestPVPanic(t *testing.T) {
	n := 0
	p := NewPVPanic(func() { n++ })
	if rd(p, 0) != pvpanicFeatures {
		t.Fatal("features not advertised")
	}
	wr(p, 0, pvpanicCrashLd)
	wr(p, 0, pvpanicPanicked)
	if n != 1 {
		t.Fatalf("panics = %d, want 1", n)
	}
}

// FuzzSerial drives the UART with arbitrary guest register accesses; it
// must never panic nor let the receive queue grow past its limit.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{0x04, 0x0b, 0x01, 0x02, 0x00, 'a', 0x82, 0x00})
	f.Add([]byte{0x04, 0x10, 0x00, 0x41, 0x80, 0x00, 0x85, 0x00})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := NewSerial(&bytes.Buffer{}, func() {})
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 0x07)
			if ops[i]&0x80 != 0 {
				rd(s, off)
			} else {
				wr(s, off, ops[i+1])
			}
			if len(s.rx) > rxLimit {
				t.Fatalf("rx queue %d > %d", len(s.rx), rxLimit)
			}
		}
	})
}

// sciProbe records SCI level changes.
type sciProbe struct{ levels []bool }

func (p *sciProbe) set(level bool) { p.levels = append(p.levels, level) }

func (p *sciProbe) level() bool { return len(p.levels) > 0 && p.levels[len(p.levels)-1] }

func w16(a *ACPIPM, off uint64, v uint16) { a.Write(off, []byte{byte(v), byte(v >> 8)}) }

func r16(a *ACPIPM, off uint64) uint16 {
	b := make([]byte, 2)
	a.Read(off, b)
	return uint16(b[0]) | uint16(b[1])<<8
}

func TestACPIPMPowerButton(t *testing.T) {
	type step struct {
		do      func(a *ACPIPM) bool // returns PressPowerButton's result, or true
		sci     bool
		status  uint16
		enable  uint16
		pressed bool
	}
	press := func(a *ACPIPM) bool { return a.PressPowerButton() }
	enable := func(v uint16) func(a *ACPIPM) bool {
		return func(a *ACPIPM) bool { w16(a, acpiPM1Enable, v); return true }
	}
	clear16 := func(v uint16) func(a *ACPIPM) bool {
		return func(a *ACPIPM) bool { w16(a, acpiPM1Status, v); return true }
	}
	byteAt := func(off uint64, v byte) func(a *ACPIPM) bool {
		return func(a *ACPIPM) bool { wr(a, off, v); return true }
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"press with the event enabled raises the SCI until the status is cleared", []step{
			{enable(pm1PowerButton), false, 0, pm1PowerButton, true},
			{press, true, pm1PowerButton, pm1PowerButton, true},
			{clear16(0), true, pm1PowerButton, pm1PowerButton, true}, // writing 0 clears nothing
			{clear16(pm1PowerButton), false, 0, pm1PowerButton, true},
		}},
		{"press before the driver enables it latches; enabling raises the SCI", []step{
			{press, false, pm1PowerButton, 0, false},
			{enable(pm1PowerButton), true, pm1PowerButton, pm1PowerButton, true},
			{enable(0), false, pm1PowerButton, 0, true},
			{clear16(0xffff), false, 0, 0, true},
		}},
		{"byte accesses", []step{
			{byteAt(acpiPM1Enable+1, 0x01), false, 0, pm1PowerButton, true},
			{press, true, pm1PowerButton, pm1PowerButton, true},
			{byteAt(acpiPM1Status, 0xff), true, pm1PowerButton, pm1PowerButton, true}, // low byte holds no power button bit
			{byteAt(acpiPM1Status+1, 0x01), false, 0, pm1PowerButton, true},
		}},
		{"unimplemented enable bits do not stick", []step{
			{enable(0xffff), false, 0, pm1PowerButton | pm1GlobalLock, true},
			{enable(1 << 5), false, 0, pm1GlobalLock, true}, // GBL_EN sticks: ACPICA finds the global lock
			{enable(1 << 0), false, 0, 0, true},             // TMR_EN: no PM timer
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p sciProbe
			a := NewACPIPM(5, 1, nil, nil)
			a.SetSCI(p.set)
			for i, s := range tt.steps {
				got := s.do(a)
				if got != s.pressed {
					t.Errorf("step %d: result %v, want %v", i, got, s.pressed)
				}
				if p.level() != s.sci {
					t.Errorf("step %d: SCI %v, want %v", i, p.level(), s.sci)
				}
				if st, en := r16(a, acpiPM1Status), r16(a, acpiPM1Enable); st != s.status || en != s.enable {
					t.Errorf("step %d: status %#x enable %#x, want %#x %#x", i, st, en, s.status, s.enable)
				}
			}
			for i := 1; i < len(p.levels); i++ {
				if p.levels[i] == p.levels[i-1] {
					t.Errorf("SCI driven to %v twice in a row: %v", p.levels[i], p.levels)
				}
			}
		})
	}
}

func TestACPIPMControl(t *testing.T) {
	const slpTypS5, slpEn = 5 << 10, 1 << 13
	tests := []struct {
		name  string
		write func(a *ACPIPM)
		off   int
		read  uint16
	}{
		{"S5 in one 16-bit write", func(a *ACPIPM) { w16(a, acpiPM1Control, slpTypS5|slpEn) }, 1, slpTypS5 | pm1SCIEnable},
		{"ACPICA's sequence: SLP_TYP, then SLP_TYP|SLP_EN", func(a *ACPIPM) {
			w16(a, acpiPM1Control, slpTypS5)
			w16(a, acpiPM1Control, slpTypS5|slpEn)
		}, 1, slpTypS5 | pm1SCIEnable},
		{"SLP_TYP alone", func(a *ACPIPM) { w16(a, acpiPM1Control, slpTypS5) }, 0, slpTypS5 | pm1SCIEnable},
		{"S3 is not offered", func(a *ACPIPM) { w16(a, acpiPM1Control, 3<<10|slpEn) }, 0, 3<<10 | pm1SCIEnable},
		{"high byte alone", func(a *ACPIPM) { wr(a, acpiPM1Control+1, 5<<2|sleepEnable) }, 1, slpTypS5 | pm1SCIEnable},
		{"SCI_EN cannot be cleared", func(a *ACPIPM) { w16(a, acpiPM1Control, 0) }, 0, pm1SCIEnable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off := 0
			a := NewACPIPM(5, 1, func() { off++ }, nil)
			tt.write(a)
			if off != tt.off {
				t.Errorf("power-offs %d, want %d", off, tt.off)
			}
			if got := r16(a, acpiPM1Control); got != tt.read {
				t.Errorf("PM1 control reads %#x, want %#x", got, tt.read)
			}
		})
	}
}

// FuzzACPIPM drives the register block with arbitrary guest accesses and
// presses: the SCI must always follow status&enable, change only when it
// changes, and nothing may panic.
func FuzzACPIPM(f *testing.F) {
	f.Add([]byte{0x06, 0x00, 0x01, 0xff, 0x04, 0x00, 0x01, 0x08, 0x00, 0x34})
	f.Add([]byte{0xff, 0x07, 0x01, 0x05, 0x01})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var p sciProbe
		a := NewACPIPM(5, 1, func() {}, func() {})
		a.SetSCI(p.set)
		for i := 0; i+2 < len(ops); i += 3 {
			op, off := ops[i], uint64(ops[i+1]%ACPIPMPorts)
			switch op % 4 {
			case 0:
				a.PressPowerButton()
			case 1:
				a.Write(off, []byte{ops[i+2]})
			case 2:
				a.Write(off, []byte{ops[i+2], op})
			case 3:
				a.Read(off, make([]byte, 1+int(op>>6)))
			}
			want := r16(a, acpiPM1Status)&r16(a, acpiPM1Enable) != 0
			if p.level() != want {
				t.Fatalf("op %d: SCI %v, status&enable says %v", i/3, p.level(), want)
			}
		}
		for i := 1; i < len(p.levels); i++ {
			if p.levels[i] == p.levels[i-1] {
				t.Fatalf("SCI driven to %v twice in a row", p.levels[i])
			}
		}
	})
}
