package acpi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIASLDisassembles hands every table to ACPICA's disassembler, an
// independent parser: it must accept each one without errors, and find
// what the tables are meant to say.
func TestIASLDisassembles(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (apt-get install acpica-tools): skipping the independent ACPICA check")
	}
	for _, powerButton := range []bool{false, true} {
		name := "hardware-reduced"
		if powerButton {
			name = "full ACPI"
		}
		t.Run(name, func(t *testing.T) { iaslCheck(t, iasl, powerButton) })
	}
}

func iaslCheck(t *testing.T, iasl string, powerButton bool) {
	c := DefaultConfig(4)
	c.PowerButton = powerButton
	if !powerButton {
		c.Overrides = nil
	}
	c.PCI.MMIO64 = Window{Base: 1 << 40, Size: 1 << 36}
	m, rsdp := writeTables(t, c)
	d := decode(t, m, rsdp)
	dir := t.TempDir()
	wants := map[string][]string{
		"FACP": {"Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1", "Sleep Control Register", "Address : 00000000000003C0", "Address : 00000000000003C1", "Address : 00000000000003C2", "Value to cause reset : 01"},
		"APIC": {"Processor Local APIC", "Local Apic ID : 03", "I/O APIC", "Address : FEC00000", "Local APIC NMI"},
		"MCFG": {"Base Address : 00000000E0000000", "End Bus Number : 00"},
		"DSDT": {"Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x05, Zero, Zero, Zero })", "EisaId (\"PNP0501\")", "EisaId (\"PNP0A08\")", "IRQNoFlags ()", "QWordMemory", "Memory32Fixed (ReadOnly,", "Name (_HID, \"QEMU0001\")", "0x0505, // Range Minimum"},
	}
	if powerButton {
		wants["FACP"] = []string{"Hardware Reduced (V5) : 0", "Power Button (V1) : 0", "Reset Register Supported (V2) : 1",
			"SCI Interrupt : 0009", "PM1A Event Block Address : 000003C4", "PM1A Control Block Address : 000003C8",
			"PM1 Event Block Length : 04", "PM1 Control Block Length : 02", "SMI Command Port : 00000000",
			"Address : 00000000000003C2", "Value to cause reset : 01"}
		wants["APIC"] = append(wants["APIC"], "Interrupt Source Override", "Source : 09", "Interrupt : 00000009", "Polarity : 1", "Trigger Mode : 3")
		wants["FACS"] = []string{"Length : 00000040", "Version : 02"}
	}
	for sig, b := range d.tables {
		path := filepath.Join(dir, strings.ToLower(sig)+".dat")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(iasl, "-d", path).CombinedOutput()
		if err != nil {
			t.Fatalf("iasl -d %s: %v\n%s", sig, err, out)
		}
		if strings.Contains(string(out), "Error") {
			t.Errorf("iasl -d %s reported errors:\n%s", sig, out)
		}
		dsl, err := os.ReadFile(strings.TrimSuffix(path, ".dat") + ".dsl")
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(dsl)), " ")
		for _, w := range wants[sig] {
			if !strings.Contains(text, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("%s disassembly lacks %q:\n%s", sig, w, dsl)
			}
		}
		if strings.Contains(text, "Invalid") || strings.Contains(text, "**** ") {
			t.Errorf("%s disassembly flags a problem:\n%s", sig, dsl)
		}
		if sig == "DSDT" {
			// Recompiling runs the compiler's semantic checks:
			// reserved-name types, resource descriptors.
			dslPath := strings.TrimSuffix(path, ".dat") + ".dsl"
			out, err := exec.Command(iasl, "-p", filepath.Join(dir, "recompiled"), dslPath).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "0 Errors, 0 Warnings") {
				t.Errorf("iasl recompiling the DSDT: %v\n%s", err, out)
			}
		}
	}
}
