package pci

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// lineLog records KVM_IRQ_LINE calls.
type lineLog struct {
	calls []string
	fail  bool
}

func (l *lineLog) IRQLine(irq uint32, level bool) error {
	if l.fail {
		return errors.New("refused")
	}
	l.calls = append(l.calls, fmt.Sprintf("%d=%v", irq, level))
	return nil
}

func TestINTxGSISwizzle(t *testing.T) {
	tests := []struct {
		slot, pin int
		want      uint32
	}{
		{1, 0, 17}, {2, 0, 18}, {7, 0, 23}, {8, 0, 16}, {9, 0, 17},
		{1, 3, 20}, {5, 3, 16}, {31, 0, 23}, {31, 3, 18},
	}
	for _, tt := range tests {
		if got := INTxGSI(tt.slot, tt.pin); got != tt.want {
			t.Errorf("INTxGSI(%d, %d) = %d, want %d", tt.slot, tt.pin, got, tt.want)
		}
	}
	for s := range Slots {
		for p := range INTxPins {
			if g := INTxGSI(s, p); g < INTxFirstGSI || g >= INTxFirstGSI+INTxGSIs {
				t.Fatalf("slot %d pin %d on GSI %d, outside the IOAPIC's PCI inputs", s, p, g)
			}
		}
	}
}

// TestINTxSharedLine drives pins that share a GSI: the line is their
// wired-OR, so it rises with the first and falls with the last.
func TestINTxSharedLine(t *testing.T) {
	type step struct {
		pin   int // index into pins
		level bool
		want  []string // IRQLine calls this step makes
	}
	tests := []struct {
		name  string
		slots []int
		steps []step
	}{
		{"single", []int{1}, []step{
			{0, true, []string{"17=true"}},
			{0, true, nil}, // already asserted
			{0, false, []string{"17=false"}},
			{0, false, nil},
		}},
		{"shared", []int{1, 9}, []step{ // slots 1 and 9 share GSI 17
			{0, true, []string{"17=true"}},
			{1, true, nil},
			{0, false, nil}, // slot 9 still holds the line up
			{1, false, []string{"17=false"}},
			{1, true, []string{"17=true"}},
		}},
		{"separate", []int{1, 2}, []step{
			{0, true, []string{"17=true"}},
			{1, true, []string{"18=true"}},
			{0, false, []string{"17=false"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := &intxLines{asserted: map[uint32]int{}}
			var pins []*INTxPin
			for _, s := range tt.slots {
				pins = append(pins, &INTxPin{lines: lines, gsi: INTxGSI(s, 0)})
			}
			for i, st := range tt.steps {
				vm := &lineLog{}
				if err := pins[st.pin].Set(vm, st.level); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(vm.calls, st.want) {
					t.Fatalf("step %d (pin %d to %v): IRQLine calls %v, want %v", i, st.pin, st.level, vm.calls, st.want)
				}
				if pins[st.pin].Asserted() != st.level {
					t.Fatalf("step %d: Asserted() = %v", i, !st.level)
				}
			}
		})
	}
}

func TestINTxSetError(t *testing.T) {
	p := &INTxPin{lines: &intxLines{asserted: map[uint32]int{}}, gsi: 17}
	if err := p.Set(&lineLog{fail: true}, true); err == nil {
		t.Fatal("IRQLine error not returned")
	}
}

// TestBusHandsOutPins: Add gives each INTx user the pin of its slot, with
// the interrupt line register holding the same GSI.
func TestBusHandsOutPins(t *testing.T) {
	b := NewBus(0xC000_0000, 0xE000_0000)
	for slot := 1; slot <= 10; slot++ {
		d := newTestDev(t, 0x1000)
		got, err := b.Add(d)
		if err != nil || got != slot {
			t.Fatalf("Add = %d, %v", got, err)
		}
		if want := INTxGSI(slot, 0); uint32(d.line) != want || uint32(d.cfg.InterruptLine()) != want {
			t.Fatalf("slot %d: pin GSI %d, line register %d, want %d", slot, d.line, d.cfg.InterruptLine(), want)
		}
	}
}

// TestOnWriteRunsAfterEveryWrite: the hook that re-evaluates INTx sees the
// register state the write left, whatever the write touched.
func TestOnWriteRunsAfterEveryWrite(t *testing.T) {
	d := newTestDev(t, 0x1000)
	var cmds []uint16
	d.cfg.OnWrite(func() { cmds = append(cmds, d.cfg.Command()) })
	d.cfg.Write(RegCommand, []byte{0, CommandINTxDisable >> 8})
	d.cfg.Write(RegInterruptLine, []byte{5})
	d.cfg.Write(RegCommand, []byte{CommandMemory, 0})
	want := []uint16{CommandINTxDisable, CommandINTxDisable, CommandMemory}
	if !slices.Equal(cmds, want) {
		t.Fatalf("hook saw commands %#x, want %#x", cmds, want)
	}
}
