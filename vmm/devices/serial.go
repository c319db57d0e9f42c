package devices

import (
	"io"
	"sync"
)

// COM1 is the port base and ISA IRQ of the first serial port.
const (
	COM1Base = 0x3f8
	COM1IRQ  = 4
	// SerialPorts is the size of an 8250's register window.
	SerialPorts = 8
)

// 8250/16550A registers (offsets) and bits, as the Linux driver uses them.
const (
	uartRBR = 0 // receive buffer (read), THR transmit (write), DLL with DLAB
	uartIER = 1 // interrupt enable, DLM with DLAB
	uartIIR = 2 // interrupt identification (read), FCR (write)
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7

	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04
	ierMSI  = 0x08

	iirNoInt = 0x01
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirFIFO  = 0xc0

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	lsrDR   = 0x01
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80

	// rxLimit bounds what host input may queue while the guest is not reading.
	rxLimit = 4096
)

// Serial is a 16550A UART. Output goes to an io.Writer as the guest writes
// it; input queued with Input is delivered through the receive buffer with
// the data-available interrupt.
type Serial struct {
	mu      sync.Mutex
	out     io.Writer
	irq     func()
	ier     uint8
	lcr     uint8
	mcr     uint8
	scr     uint8
	fcr     uint8
	dll     uint8
	dlm     uint8
	msr     uint8
	rx      []byte
	rxSpace *sync.Cond
	// thrPending is the "transmitter empty" interrupt condition; reading
	// IIR while it is the highest priority clears it, as on the real part.
	thrPending bool
	outErr     error
}

// NewSerial returns a UART writing guest output to out. irq is called for
// every interrupt edge (the ISA line is edge-triggered).
func NewSerial(out io.Writer, irq func()) *Serial {
	s := &Serial{out: out, irq: irq, dll: 12, mcr: mcrOUT2, msr: msrDCD | msrDSR | msrCTS}
	s.rxSpace = sync.NewCond(&s.mu)
	return s
}

// Input queues host bytes for the guest. It blocks while the queue is full,
// so a fast producer cannot grow it without bound.
func (s *Serial) Input(p []byte) {
	s.mu.Lock()
	for len(p) > 0 {
		for len(s.rx) >= rxLimit {
			s.rxSpace.Wait()
		}
		n := min(len(p), rxLimit-len(s.rx))
		s.rx = append(s.rx, p[:n]...)
		p = p[n:]
		s.raiseLocked()
	}
	s.mu.Unlock()
}

// OutputError is the first error writing guest output, if any; the guest
// is not told, as a real UART does not know its cable is cut.
func (s *Serial) OutputError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outErr
}

// iir computes the pending interrupt with the highest priority.
func (s *Serial) iirLocked() uint8 {
	fifo := uint8(0)
	if s.fcr&0x01 != 0 {
		fifo = iirFIFO
	}
	switch {
	case s.ier&ierRDI != 0 && len(s.rx) > 0:
		return fifo | iirRDI
	case s.ier&ierTHRI != 0 && s.thrPending:
		return fifo | iirTHRI
	}
	return fifo | iirNoInt
}

// raiseLocked signals an edge when an interrupt is pending and the board's
// OUT2 gate (which PC serial ports wire to the IRQ line) is open.
func (s *Serial) raiseLocked() {
	if s.mcr&mcrOUT2 != 0 && s.mcr&mcrLoop == 0 && s.iirLocked()&iirNoInt == 0 && s.irq != nil {
		s.irq()
	}
}

// Read implements Device.
func (s *Serial) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) != 1 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch offset {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			data[0] = s.dll
			return
		}
		if len(s.rx) > 0 {
			data[0] = s.rx[0]
			s.rx = s.rx[1:]
			if len(s.rx) == 0 {
				s.rx = nil
			}
			s.rxSpace.Broadcast()
			if len(s.rx) > 0 {
				s.raiseLocked()
			}
		}
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			data[0] = s.dlm
			return
		}
		data[0] = s.ier
	case uartIIR:
		v := s.iirLocked()
		data[0] = v
		if v&0x0f == iirTHRI {
			s.thrPending = false
		}
	case uartLCR:
		data[0] = s.lcr
	case uartMCR:
		data[0] = s.mcr
	case uartLSR:
		v := uint8(lsrTHRE | lsrTEMT)
		if len(s.rx) > 0 {
			v |= lsrDR
		}
		data[0] = v
	case uartMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback wires DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD; Linux's
			// probe checks exactly this.
			var v uint8
			if s.mcr&mcrDTR != 0 {
				v |= msrDSR
			}
			if s.mcr&mcrRTS != 0 {
				v |= msrCTS
			}
			if s.mcr&mcrOUT1 != 0 {
				v |= msrRI
			}
			if s.mcr&mcrOUT2 != 0 {
				v |= msrDCD
			}
			data[0] = v
			return
		}
		data[0] = s.msr
	case uartSCR:
		data[0] = s.scr
	}
}

// Write implements Device.
func (s *Serial) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch offset {
	case uartRBR:
		if s.lcr&lcrDLAB != 0 {
			s.dll = v
			return
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.rx) < rxLimit {
				s.rx = append(s.rx, v)
			}
		} else if s.out != nil && s.outErr == nil {
			if _, err := s.out.Write(data); err != nil {
				s.outErr = err
			}
		}
		s.thrPending = true
		s.raiseLocked()
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & (ierRDI | ierTHRI | ierRLSI | ierMSI)
		// Enabling THRI with an empty transmitter interrupts at once; the
		// 8250 driver relies on it to start transmitting.
		if s.ier&ierTHRI != 0 && old&ierTHRI == 0 {
			s.thrPending = true
		}
		s.raiseLocked()
	case uartIIR:
		s.fcr = v
		if v&0x02 != 0 { // clear receive FIFO
			s.rx = nil
			s.rxSpace.Broadcast()
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v & 0x1f
		s.raiseLocked()
	case uartLSR, uartMSR:
		// read-only
	case uartSCR:
		s.scr = v
	}
}
