// Command kvmhost-run runs a command on KVM: directly when /dev/kvm is
// here, otherwise inside the nested QEMU TCG test host (package kvmhost),
// with the files it names copied in at their host paths. make demo and the
// benchmarks use it so that they work on machines without /dev/kvm.
//
//	kvmhost-run [--file PATH]... [--memory MIB] -- COMMAND [ARG]...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"kvmstack/tests/kvmhost"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var files fileList
	fs := flag.NewFlagSet("kvmhost-run", flag.ContinueOnError)
	fs.Var(&files, "file", "file to copy into the test host (repeatable)")
	dir := fs.String("dir", "build/kvmhost", "directory prepared by tests/kvmhost/build.sh")
	memMiB := fs.Int("memory", 6144, "test host RAM in MiB")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	args := fs.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "kvmhost-run: no command (usage: kvmhost-run [--file PATH]... -- COMMAND [ARG]...)")
		os.Exit(2)
	}
	if kvmhost.HaveKVM() == nil {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "kvmhost-run:", err)
			os.Exit(2)
		}
		return
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost-run:", err)
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost-run:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "kvmhost-run: no /dev/kvm here; running in the nested test host (QEMU TCG, emulated AMD-V)\n")
	status, err := kvmhost.Run(context.Background(), kvmhost.Config{
		Dir: abs, Files: files, Args: args, WorkDir: wd, MemoryMiB: *memMiB, Output: os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost-run:", err)
		os.Exit(2)
	}
	os.Exit(status)
}
