package acpi

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	pcibus "kvmstack/vmm/devices/pci"
)

// TestPRTDisassembles hands the DSDT to ACPICA's disassembler and reads the
// host bridge's _PRT back out of its output: one entry per slot 1–31 and
// pin A–D, each routing to the GSI that vmm/devices/pci drives for that
// pin, with no link device (Source Zero).
func TestPRTDisassembles(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (apt-get install acpica-tools)")
	}
	b, err := dsdt(DefaultConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "dsdt.dat")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(iasl, "-d", path).CombinedOutput(); err != nil || strings.Contains(string(out), "Error") {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	dsl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(dsl)
	i := strings.Index(text, "Name (_PRT, Package (")
	if i < 0 {
		t.Fatalf("no _PRT in the DSDT:\n%s", text)
	}
	pci0 := strings.Index(text, "Device (PCI0)")
	if pci0 < 0 || pci0 > i || strings.Contains(text[pci0+len("Device (PCI0)"):i], "Device (") {
		t.Fatalf("_PRT is not in Device (PCI0):\n%s", text)
	}
	// iasl prints each entry as Package (0x04) { 0x0001FFFF, Zero, Zero, 0x11 },
	// with the small integers as Zero/One or hex.
	entry := regexp.MustCompile(`Package \(0x04\)\s*\{\s*(0x[0-9A-F]+),\s*(Zero|One|0x[0-9A-F]+),\s*Zero,\s*(0x[0-9A-F]+)\s*\}`)
	got := map[string]uint64{}
	for _, m := range entry.FindAllStringSubmatch(text[i:], -1) {
		adr, _ := strconv.ParseUint(m[1], 0, 32)
		pin := map[string]uint64{"Zero": 0, "One": 1}[m[2]]
		if strings.HasPrefix(m[2], "0x") {
			pin, _ = strconv.ParseUint(m[2], 0, 8)
		}
		gsi, _ := strconv.ParseUint(m[3], 0, 32)
		if adr&0xFFFF != 0xFFFF {
			t.Errorf("_PRT address %#x names one function, want any (0xFFFF)", adr)
		}
		got[fmt.Sprintf("%d/%d", adr>>16, pin)] = gsi
	}
	if want := (pcibus.Slots - 1) * pcibus.INTxPins; len(got) != want {
		t.Fatalf("_PRT has %d entries, want %d:\n%s", len(got), want, text[i:])
	}
	for slot := 1; slot < pcibus.Slots; slot++ {
		for pin := range pcibus.INTxPins {
			k := fmt.Sprintf("%d/%d", slot, pin)
			if g, ok := got[k]; !ok || g != uint64(pcibus.INTxGSI(slot, pin)) {
				t.Errorf("_PRT slot %d pin %d: GSI %d (present %v), want %d", slot, pin, g, ok, pcibus.INTxGSI(slot, pin))
			}
		}
	}
	// Recompiling runs the compiler's checks on _PRT's reserved-name type.
	out, err := exec.Command(iasl, "-p", filepath.Join(dir, "re"), filepath.Join(dir, "dsdt.dsl")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 Errors, 0 Warnings") {
		t.Errorf("iasl recompiling the DSDT: %v\n%s", err, out)
	}
}
