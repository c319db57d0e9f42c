package kvm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// field pairs a C member designator (as offsetof accepts it) with the Go
// offset that must equal it.
type field struct {
	c     string
	goOff uintptr
}

// layout is one mirrored kernel struct: its C name, Go size, the size the
// x86-64 uapi has (hard-coded, so the check runs without gcc), and members.
type layout struct {
	c      string
	goSize uintptr
	want   uintptr
	fields []field
}

func layouts() []layout {
	var (
		regs   Regs
		seg    Segment
		dt     DTable
		sregs  Sregs
		fpu    FPU
		xs     XSave
		msr    MSREntry
		cpuid  CPUIDEntry2
		lapic  LAPICState
		mp     MPState
		ev     VCPUEvents
		xcr    XCR
		xcrs   XCRs
		tr     Translation
		umr    UserspaceMemoryRegion
		pic    PICState
		ioapic IOAPICState
		chip   IRQChip
		pitc   PITConfig
		pitch  PITChannelState
		pits   PITState2
		clk    ClockData
		ioev   IOEventFD
		irqfd  IRQFD
		route  IRQRoutingEntry
		rchip  IRQRoutingIRQChip
		rmsi   IRQRoutingMSI
		msi    MSI
		ecap   EnableCap
		lvl    irqLevel
	)
	o := func(c string, off uintptr) field { return field{c, off} }
	return []layout{
		{"struct kvm_regs", unsafe.Sizeof(regs), 144, []field{
			o("rax", unsafe.Offsetof(regs.RAX)), o("rbx", unsafe.Offsetof(regs.RBX)),
			o("rcx", unsafe.Offsetof(regs.RCX)), o("rdx", unsafe.Offsetof(regs.RDX)),
			o("rsi", unsafe.Offsetof(regs.RSI)), o("rdi", unsafe.Offsetof(regs.RDI)),
			o("rsp", unsafe.Offsetof(regs.RSP)), o("rbp", unsafe.Offsetof(regs.RBP)),
			o("r8", unsafe.Offsetof(regs.R8)), o("r9", unsafe.Offsetof(regs.R9)),
			o("r10", unsafe.Offsetof(regs.R10)), o("r11", unsafe.Offsetof(regs.R11)),
			o("r12", unsafe.Offsetof(regs.R12)), o("r13", unsafe.Offsetof(regs.R13)),
			o("r14", unsafe.Offsetof(regs.R14)), o("r15", unsafe.Offsetof(regs.R15)),
			o("rip", unsafe.Offsetof(regs.RIP)), o("rflags", unsafe.Offsetof(regs.RFLAGS)),
		}},
		{"struct kvm_segment", unsafe.Sizeof(seg), 24, []field{
			o("base", unsafe.Offsetof(seg.Base)), o("limit", unsafe.Offsetof(seg.Limit)),
			o("selector", unsafe.Offsetof(seg.Selector)), o("type", unsafe.Offsetof(seg.Type)),
			o("present", unsafe.Offsetof(seg.Present)), o("dpl", unsafe.Offsetof(seg.DPL)),
			o("db", unsafe.Offsetof(seg.DB)), o("s", unsafe.Offsetof(seg.S)),
			o("l", unsafe.Offsetof(seg.L)), o("g", unsafe.Offsetof(seg.G)),
			o("avl", unsafe.Offsetof(seg.AVL)), o("unusable", unsafe.Offsetof(seg.Unusable)),
			o("padding", unsafe.Offsetof(seg.Padding)),
		}},
		{"struct kvm_dtable", unsafe.Sizeof(dt), 16, []field{
			o("base", unsafe.Offsetof(dt.Base)), o("limit", unsafe.Offsetof(dt.Limit)),
			o("padding", unsafe.Offsetof(dt.Padding)),
		}},
		{"struct kvm_sregs", unsafe.Sizeof(sregs), 312, []field{
			o("cs", unsafe.Offsetof(sregs.CS)), o("ds", unsafe.Offsetof(sregs.DS)),
			o("es", unsafe.Offsetof(sregs.ES)), o("fs", unsafe.Offsetof(sregs.FS)),
			o("gs", unsafe.Offsetof(sregs.GS)), o("ss", unsafe.Offsetof(sregs.SS)),
			o("tr", unsafe.Offsetof(sregs.TR)), o("ldt", unsafe.Offsetof(sregs.LDT)),
			o("gdt", unsafe.Offsetof(sregs.GDT)), o("idt", unsafe.Offsetof(sregs.IDT)),
			o("cr0", unsafe.Offsetof(sregs.CR0)), o("cr2", unsafe.Offsetof(sregs.CR2)),
			o("cr3", unsafe.Offsetof(sregs.CR3)), o("cr4", unsafe.Offsetof(sregs.CR4)),
			o("cr8", unsafe.Offsetof(sregs.CR8)), o("efer", unsafe.Offsetof(sregs.EFER)),
			o("apic_base", unsafe.Offsetof(sregs.APICBase)),
			o("interrupt_bitmap", unsafe.Offsetof(sregs.InterruptBitmap)),
		}},
		{"struct kvm_fpu", unsafe.Sizeof(fpu), 416, []field{
			o("fpr", unsafe.Offsetof(fpu.FPR)), o("fcw", unsafe.Offsetof(fpu.FCW)),
			o("fsw", unsafe.Offsetof(fpu.FSW)), o("ftwx", unsafe.Offsetof(fpu.FTWX)),
			o("pad1", unsafe.Offsetof(fpu.Pad1)), o("last_opcode", unsafe.Offsetof(fpu.LastOpcode)),
			o("last_ip", unsafe.Offsetof(fpu.LastIP)), o("last_dp", unsafe.Offsetof(fpu.LastDP)),
			o("xmm", unsafe.Offsetof(fpu.XMM)), o("mxcsr", unsafe.Offsetof(fpu.MXCSR)),
			o("pad2", unsafe.Offsetof(fpu.Pad2)),
		}},
		// Only the fixed region of kvm_xsave is mirrored; Extra is the
		// flexible tail and is marshalled separately.
		{"struct kvm_xsave", unsafe.Sizeof(xs.Region), XSaveSize, []field{
			o("region", unsafe.Offsetof(xs.Region)),
		}},
		{"struct kvm_msr_entry", unsafe.Sizeof(msr), 16, []field{
			o("index", unsafe.Offsetof(msr.Index)), o("reserved", unsafe.Offsetof(msr.Reserved)),
			o("data", unsafe.Offsetof(msr.Data)),
		}},
		{"struct kvm_msrs", sizeofKVMMSRs, 8, []field{o("entries", sizeofKVMMSRs)}},
		{"struct kvm_msr_list", sizeofKVMMSRList, 4, []field{o("indices", sizeofKVMMSRList)}},
		{"struct kvm_cpuid_entry2", unsafe.Sizeof(cpuid), 40, []field{
			o("function", unsafe.Offsetof(cpuid.Function)), o("index", unsafe.Offsetof(cpuid.Index)),
			o("flags", unsafe.Offsetof(cpuid.Flags)), o("eax", unsafe.Offsetof(cpuid.EAX)),
			o("ebx", unsafe.Offsetof(cpuid.EBX)), o("ecx", unsafe.Offsetof(cpuid.ECX)),
			o("edx", unsafe.Offsetof(cpuid.EDX)), o("padding", unsafe.Offsetof(cpuid.Padding)),
		}},
		{"struct kvm_cpuid2", sizeofKVMCPUID2, 8, []field{o("entries", sizeofKVMCPUID2)}},
		{"struct kvm_lapic_state", unsafe.Sizeof(lapic), 1024, []field{o("regs", unsafe.Offsetof(lapic.Regs))}},
		{"struct kvm_mp_state", unsafe.Sizeof(mp), 4, []field{o("mp_state", 0)}},
		{"struct kvm_vcpu_events", unsafe.Sizeof(ev), 64, []field{
			o("exception.injected", unsafe.Offsetof(ev.Exception)+unsafe.Offsetof(ev.Exception.Injected)),
			o("exception.nr", unsafe.Offsetof(ev.Exception)+unsafe.Offsetof(ev.Exception.Nr)),
			o("exception.has_error_code", unsafe.Offsetof(ev.Exception)+unsafe.Offsetof(ev.Exception.HasErrorCode)),
			o("exception.pending", unsafe.Offsetof(ev.Exception)+unsafe.Offsetof(ev.Exception.Pending)),
			o("exception.error_code", unsafe.Offsetof(ev.Exception)+unsafe.Offsetof(ev.Exception.ErrorCode)),
			o("interrupt.injected", unsafe.Offsetof(ev.Interrupt)+unsafe.Offsetof(ev.Interrupt.Injected)),
			o("interrupt.nr", unsafe.Offsetof(ev.Interrupt)+unsafe.Offsetof(ev.Interrupt.Nr)),
			o("interrupt.soft", unsafe.Offsetof(ev.Interrupt)+unsafe.Offsetof(ev.Interrupt.Soft)),
			o("interrupt.shadow", unsafe.Offsetof(ev.Interrupt)+unsafe.Offsetof(ev.Interrupt.Shadow)),
			o("nmi.injected", unsafe.Offsetof(ev.NMI)+unsafe.Offsetof(ev.NMI.Injected)),
			o("nmi.pending", unsafe.Offsetof(ev.NMI)+unsafe.Offsetof(ev.NMI.Pending)),
			o("nmi.masked", unsafe.Offsetof(ev.NMI)+unsafe.Offsetof(ev.NMI.Masked)),
			o("nmi.pad", unsafe.Offsetof(ev.NMI)+unsafe.Offsetof(ev.NMI.Pad)),
			o("sipi_vector", unsafe.Offsetof(ev.SIPIVector)),
			o("flags", unsafe.Offsetof(ev.Flags)),
			o("smi.smm", unsafe.Offsetof(ev.SMI)+unsafe.Offsetof(ev.SMI.SMM)),
			o("smi.pending", unsafe.Offsetof(ev.SMI)+unsafe.Offsetof(ev.SMI.Pending)),
			o("smi.smm_inside_nmi", unsafe.Offsetof(ev.SMI)+unsafe.Offsetof(ev.SMI.SMMInsideNMI)),
			o("smi.latched_init", unsafe.Offsetof(ev.SMI)+unsafe.Offsetof(ev.SMI.LatchedInit)),
			o("triple_fault.pending", unsafe.Offsetof(ev.TripleFault)+unsafe.Offsetof(ev.TripleFault.Pending)),
			o("reserved", unsafe.Offsetof(ev.Reserved)),
			o("exception_has_payload", unsafe.Offsetof(ev.ExceptionHasPayload)),
			o("exception_payload", unsafe.Offsetof(ev.ExceptionPayload)),
		}},
		{"struct kvm_xcr", unsafe.Sizeof(xcr), 16, []field{
			o("xcr", unsafe.Offsetof(xcr.XCR)), o("reserved", unsafe.Offsetof(xcr.Reserved)),
			o("value", unsafe.Offsetof(xcr.Value)),
		}},
		{"struct kvm_xcrs", unsafe.Sizeof(xcrs), 392, []field{
			o("nr_xcrs", unsafe.Offsetof(xcrs.NrXCRs)), o("flags", unsafe.Offsetof(xcrs.Flags)),
			o("xcrs", unsafe.Offsetof(xcrs.XCRs)), o("padding", unsafe.Offsetof(xcrs.Padding)),
		}},
		{"struct kvm_translation", unsafe.Sizeof(tr), 24, []field{
			o("linear_address", unsafe.Offsetof(tr.LinearAddress)),
			o("physical_address", unsafe.Offsetof(tr.PhysicalAddress)),
			o("valid", unsafe.Offsetof(tr.Valid)), o("writeable", unsafe.Offsetof(tr.Writeable)),
			o("usermode", unsafe.Offsetof(tr.Usermode)), o("pad", unsafe.Offsetof(tr.Pad)),
		}},
		{"struct kvm_userspace_memory_region", unsafe.Sizeof(umr), 32, []field{
			o("slot", unsafe.Offsetof(umr.Slot)), o("flags", unsafe.Offsetof(umr.Flags)),
			o("guest_phys_addr", unsafe.Offsetof(umr.GuestPhysAddr)),
			o("memory_size", unsafe.Offsetof(umr.MemorySize)),
			o("userspace_addr", unsafe.Offsetof(umr.UserspaceAddr)),
		}},
		{"struct kvm_pic_state", unsafe.Sizeof(pic), 16, []field{
			o("last_irr", unsafe.Offsetof(pic.LastIRR)), o("irr", unsafe.Offsetof(pic.IRR)),
			o("imr", unsafe.Offsetof(pic.IMR)), o("isr", unsafe.Offsetof(pic.ISR)),
			o("priority_add", unsafe.Offsetof(pic.PriorityAdd)), o("irq_base", unsafe.Offsetof(pic.IRQBase)),
			o("read_reg_select", unsafe.Offsetof(pic.ReadRegSelect)), o("poll", unsafe.Offsetof(pic.Poll)),
			o("special_mask", unsafe.Offsetof(pic.SpecialMask)), o("init_state", unsafe.Offsetof(pic.InitState)),
			o("auto_eoi", unsafe.Offsetof(pic.AutoEOI)), o("rotate_on_auto_eoi", unsafe.Offsetof(pic.RotateOnAutoEOI)),
			o("special_fully_nested_mode", unsafe.Offsetof(pic.SpecialFullyNestedMode)),
			o("init4", unsafe.Offsetof(pic.Init4)), o("elcr", unsafe.Offsetof(pic.ELCR)),
			o("elcr_mask", unsafe.Offsetof(pic.ELCRMask)),
		}},
		{"struct kvm_ioapic_state", unsafe.Sizeof(ioapic), 216, []field{
			o("base_address", unsafe.Offsetof(ioapic.BaseAddress)), o("ioregsel", unsafe.Offsetof(ioapic.IORegSel)),
			o("id", unsafe.Offsetof(ioapic.ID)), o("irr", unsafe.Offsetof(ioapic.IRR)),
			o("pad", unsafe.Offsetof(ioapic.Pad)), o("redirtbl", unsafe.Offsetof(ioapic.RedirTbl)),
		}},
		{"struct kvm_irqchip", unsafe.Sizeof(chip), 520, []field{
			o("chip_id", unsafe.Offsetof(chip.ChipID)), o("pad", unsafe.Offsetof(chip.Pad)),
			o("chip", unsafe.Offsetof(chip.Chip)), o("chip.pic", unsafe.Offsetof(chip.Chip)),
			o("chip.ioapic", unsafe.Offsetof(chip.Chip)),
		}},
		{"struct kvm_pit_config", unsafe.Sizeof(pitc), 64, []field{
			o("flags", unsafe.Offsetof(pitc.Flags)), o("pad", unsafe.Offsetof(pitc.Pad)),
		}},
		{"struct kvm_pit_channel_state", unsafe.Sizeof(pitch), 24, []field{
			o("count", unsafe.Offsetof(pitch.Count)), o("latched_count", unsafe.Offsetof(pitch.LatchedCount)),
			o("count_latched", unsafe.Offsetof(pitch.CountLatched)), o("status_latched", unsafe.Offsetof(pitch.StatusLatched)),
			o("status", unsafe.Offsetof(pitch.Status)), o("read_state", unsafe.Offsetof(pitch.ReadState)),
			o("write_state", unsafe.Offsetof(pitch.WriteState)), o("write_latch", unsafe.Offsetof(pitch.WriteLatch)),
			o("rw_mode", unsafe.Offsetof(pitch.RWMode)), o("mode", unsafe.Offsetof(pitch.Mode)),
			o("bcd", unsafe.Offsetof(pitch.BCD)), o("gate", unsafe.Offsetof(pitch.Gate)),
			o("count_load_time", unsafe.Offsetof(pitch.CountLoadTime)),
		}},
		{"struct kvm_pit_state2", unsafe.Sizeof(pits), 112, []field{
			o("channels", unsafe.Offsetof(pits.Channels)), o("flags", unsafe.Offsetof(pits.Flags)),
			o("reserved", unsafe.Offsetof(pits.Reserved)),
		}},
		{"struct kvm_clock_data", unsafe.Sizeof(clk), 48, []field{
			o("clock", unsafe.Offsetof(clk.Clock)), o("flags", unsafe.Offsetof(clk.Flags)),
			o("pad0", unsafe.Offsetof(clk.Pad0)), o("realtime", unsafe.Offsetof(clk.Realtime)),
			o("host_tsc", unsafe.Offsetof(clk.HostTSC)), o("pad", unsafe.Offsetof(clk.Pad)),
		}},
		{"struct kvm_ioeventfd", unsafe.Sizeof(ioev), 64, []field{
			o("datamatch", unsafe.Offsetof(ioev.Datamatch)), o("addr", unsafe.Offsetof(ioev.Addr)),
			o("len", unsafe.Offsetof(ioev.Len)), o("fd", unsafe.Offsetof(ioev.FD)),
			o("flags", unsafe.Offsetof(ioev.Flags)), o("pad", unsafe.Offsetof(ioev.Pad)),
		}},
		{"struct kvm_irqfd", unsafe.Sizeof(irqfd), 32, []field{
			o("fd", unsafe.Offsetof(irqfd.FD)), o("gsi", unsafe.Offsetof(irqfd.GSI)),
			o("flags", unsafe.Offsetof(irqfd.Flags)), o("resamplefd", unsafe.Offsetof(irqfd.ResampleFD)),
			o("pad", unsafe.Offsetof(irqfd.Pad)),
		}},
		{"struct kvm_irq_routing_entry", unsafe.Sizeof(route), 48, []field{
			o("gsi", unsafe.Offsetof(route.GSI)), o("type", unsafe.Offsetof(route.Type)),
			o("flags", unsafe.Offsetof(route.Flags)), o("pad", unsafe.Offsetof(route.Pad)),
			o("u", unsafe.Offsetof(route.U)),
			o("u.irqchip.irqchip", unsafe.Offsetof(route.U)+unsafe.Offsetof(rchip.IRQChip)),
			o("u.irqchip.pin", unsafe.Offsetof(route.U)+unsafe.Offsetof(rchip.Pin)),
			o("u.msi.address_lo", unsafe.Offsetof(route.U)+unsafe.Offsetof(rmsi.AddressLo)),
			o("u.msi.address_hi", unsafe.Offsetof(route.U)+unsafe.Offsetof(rmsi.AddressHi)),
			o("u.msi.data", unsafe.Offsetof(route.U)+unsafe.Offsetof(rmsi.Data)),
			o("u.msi.devid", unsafe.Offsetof(route.U)+unsafe.Offsetof(rmsi.DevID)),
		}},
		{"struct kvm_irq_routing_irqchip", unsafe.Sizeof(rchip), 8, nil},
		{"struct kvm_irq_routing_msi", unsafe.Sizeof(rmsi), 16, nil},
		{"struct kvm_irq_routing", sizeofKVMIRQRouting, 8, []field{o("entries", sizeofKVMIRQRouting)}},
		{"struct kvm_msi", unsafe.Sizeof(msi), 32, []field{
			o("address_lo", unsafe.Offsetof(msi.AddressLo)), o("address_hi", unsafe.Offsetof(msi.AddressHi)),
			o("data", unsafe.Offsetof(msi.Data)), o("flags", unsafe.Offsetof(msi.Flags)),
			o("devid", unsafe.Offsetof(msi.DevID)), o("pad", unsafe.Offsetof(msi.Pad)),
		}},
		{"struct kvm_enable_cap", unsafe.Sizeof(ecap), 104, []field{
			o("cap", unsafe.Offsetof(ecap.Cap)), o("flags", unsafe.Offsetof(ecap.Flags)),
			o("args", unsafe.Offsetof(ecap.Args)), o("pad", unsafe.Offsetof(ecap.Pad)),
		}},
		{"struct kvm_irq_level", unsafe.Sizeof(lvl), 8, []field{
			o("irq", unsafe.Offsetof(lvl.IRQ)), o("level", unsafe.Offsetof(lvl.Level)),
		}},
		// kvm_run is read through byte offsets, not a Go struct.
		{"struct kvm_run", runSize, 2352, []field{
			o("request_interrupt_window", runOffRequestInterruptWindow),
			o("immediate_exit", runOffImmediateExit),
			o("exit_reason", runOffExitReason),
			o("ready_for_interrupt_injection", runOffReadyForInjection),
			o("if_flag", runOffIFFlag), o("flags", runOffFlags),
			o("cr8", runOffCR8), o("apic_base", runOffAPICBase),
			o("hw.hardware_exit_reason", runOffHWExitReason),
			o("fail_entry.hardware_entry_failure_reason", runOffFailEntryReason),
			o("fail_entry.cpu", runOffFailEntryCPU),
			o("ex.exception", runOffExException), o("ex.error_code", runOffExErrorCode),
			o("io.direction", runOffIODirection), o("io.size", runOffIOSize),
			o("io.port", runOffIOPort), o("io.count", runOffIOCount),
			o("io.data_offset", runOffIODataOffset),
			o("mmio.phys_addr", runOffMMIOPhysAddr), o("mmio.data", runOffMMIOData),
			o("mmio.len", runOffMMIOLen), o("mmio.is_write", runOffMMIOIsWrite),
			o("internal.suberror", runOffInternalSuberror), o("internal.ndata", runOffInternalNData),
			o("internal.data", runOffInternalData),
			o("emulation_failure.flags", runOffEmulationFlags),
			o("emulation_failure.insn_size", runOffEmulationInsnSize),
			o("system_event.type", runOffSystemEventType), o("system_event.ndata", runOffSystemEventNData),
			o("system_event.data", runOffSystemEventData), o("system_event.flags", runOffSystemEventData),
			o("kvm_valid_regs", runMinSize),
		}},
	}
}

// TestLayoutHardcoded checks every mirror against the x86-64 uapi sizes
// without needing a compiler, so it also runs where gcc is absent.
func TestLayoutHardcoded(t *testing.T) {
	for _, l := range layouts() {
		if l.goSize != l.want {
			t.Errorf("%s: Go size %d, x86-64 uapi size %d", l.c, l.goSize, l.want)
		}
		for _, f := range l.fields {
			if f.goOff >= l.want && !(f.goOff == l.want && (strings.HasSuffix(f.c, "entries") || f.c == "indices")) {
				t.Errorf("%s.%s: offset %d outside the struct", l.c, f.c, f.goOff)
			}
		}
	}
}

// TestLayoutAgainstHeaders compiles a C program against the installed
// linux-libc-dev headers that prints sizeof and offsetof for every
// mirrored struct and member, and compares them with the Go values.
func TestLayoutAgainstHeaders(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("gcc not found (%v): header layout not compared; TestLayoutHardcoded still ran", err)
	}
	for _, h := range []string{"/usr/include/linux/kvm.h", "/usr/include/x86_64-linux-gnu/asm/kvm.h"} {
		if _, err := os.Stat(h); err != nil {
			t.Skipf("%s missing (apt-get install linux-libc-dev): %v", h, err)
		}
	}
	ls := layouts()
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void) {\n")
	for _, l := range ls {
		fmt.Fprintf(&src, "\tprintf(\"%s|sizeof|%%zu\\n\", sizeof(%s));\n", l.c, l.c)
		for _, f := range l.fields {
			fmt.Fprintf(&src, "\tprintf(\"%s|%s|%%zu\\n\", offsetof(%s, %s));\n", l.c, f.c, l.c, f.c)
		}
	}
	src.WriteString("\treturn 0;\n}\n")
	dir := t.TempDir()
	cfile, bin := filepath.Join(dir, "layout.c"), filepath.Join(dir, "layout")
	if err := os.WriteFile(cfile, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-std=gnu11", "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s\n--- source ---\n%s", err, out, src.String())
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running layout program: %v", err)
	}
	got := map[string]uintptr{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "|")
		if len(parts) != 3 {
			t.Fatalf("bad line %q", sc.Text())
		}
		v, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		got[parts[0]+"|"+parts[1]] = uintptr(v)
	}
	checked := 0
	for _, l := range ls {
		if c, ok := got[l.c+"|sizeof"]; !ok || c != l.goSize {
			t.Errorf("sizeof(%s) = %d in C, %d in Go", l.c, c, l.goSize)
		}
		checked++
		for _, f := range l.fields {
			if c, ok := got[l.c+"|"+f.c]; !ok || c != f.goOff {
				t.Errorf("offsetof(%s, %s) = %d in C, %d in Go", l.c, f.c, c, f.goOff)
			}
			checked++
		}
	}
	t.Logf("%d sizes and offsets match the installed headers", checked)
}
