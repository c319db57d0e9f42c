package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/console"
)

// consoleEscape (Ctrl-]) ends an interactive console, as in telnet.
const consoleEscape = 0x1d

// consoleLinger is how long output is still shown after the input ended,
// so that the answer to the last line typed or piped in gets through.
const consoleLinger = 500 * time.Millisecond

func instanceConsoleCommand() *cli.Command {
	return &cli.Command{Name: "console", Usage: "print an instance's serial console log; --follow streams it, -i also sends standard input to it",
		ArgsUsage: "NAME_OR_ID",
		Description: "The log is what the guest wrote on its serial port, kept by the agent of the instance's host (rotated copies first).\n" +
			"With -i every line read is sent to the guest's serial port; Ctrl-] (then Enter on a terminal) or end of input quits.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep streaming what the guest writes"},
			&cli.Int64Flag{Name: "tail", Usage: "start this many bytes before the end of the log"},
			&cli.Int64Flag{Name: "offset", Usage: "start at this byte of the log (as printed by -v)"},
			&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "send standard input to the console (implies --follow)"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "print the offset of the first byte on standard error"},
		},
		Action: runConsole,
	}
}

func runConsole(c *cli.Context) error {
	arg, err := needArg(c, "instance")
	if err != nil {
		return err
	}
	opts := console.Whole()
	opts.Follow = c.Bool("follow") || c.Bool("interactive")
	if c.IsSet("tail") {
		opts.Tail = c.Int64("tail")
	}
	if c.IsSet("offset") {
		opts.Offset = c.Int64("offset")
	}
	if c.IsSet("tail") && opts.Tail < 0 || c.IsSet("offset") && opts.Offset < 0 {
		return fmt.Errorf("--tail and --offset must not be negative")
	}
	if opts.Tail >= 0 && opts.Offset >= 0 {
		return fmt.Errorf("give --tail or --offset, not both")
	}
	cl := apiClient(c)
	in, err := cl.Instance(ctxOf(c), arg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctxOf(c))
	defer cancel()
	stream, err := cl.Console(ctx, in.ID, opts)
	if err != nil {
		return err
	}
	defer stream.Close()
	if c.Bool("verbose") {
		fmt.Fprintf(c.App.ErrWriter, "console of %s from offset %d\n", in.Name, stream.Offset)
	}
	out := make(chan error, 1)
	go func() {
		_, err := io.Copy(c.App.Writer, stream)
		out <- err
	}()
	outDone := false
	defer func() {
		// Nothing may write to the output once the command returned.
		if !outDone {
			cancel()
			stream.Close()
			<-out
		}
	}()
	if !c.Bool("interactive") {
		outDone = true
		return streamEnd(ctx, <-out)
	}
	fmt.Fprintf(c.App.ErrWriter, "connected to the console of %s; Ctrl-] or end of input quits\n", in.Name)
	inErr := make(chan error, 1)
	go func() { inErr <- sendInput(ctx, cl, in.ID, c.App.Reader) }()
	select {
	case err := <-out:
		// The instance was deleted (or the server went away).
		outDone = true
		return streamEnd(ctx, err)
	case err := <-inErr:
		if err != nil {
			return err
		}
		select {
		case err := <-out:
			outDone = true
			return streamEnd(ctx, err)
		case <-time.After(consoleLinger):
			return nil
		}
	}
}

// streamEnd is the command's result once the output stream ended.
func streamEnd(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("console stream: %w", err)
}

// sendInput forwards r to the console, one request per read (a line, on a
// terminal), until Ctrl-] or the end of r.
func sendInput(ctx context.Context, cl *client.Client, id string, r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		chunk := buf[:n]
		esc := bytes.IndexByte(chunk, consoleEscape)
		if esc >= 0 {
			chunk = chunk[:esc]
		}
		if len(chunk) > 0 {
			if err := cl.ConsoleInput(ctx, id, bytes.NewReader(chunk)); err != nil {
				return fmt.Errorf("console input: %w", err)
			}
		}
		if esc >= 0 || errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
	}
}
