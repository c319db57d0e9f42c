package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/client"
)

func main() {
	app := newApp()
	if err := app.Run(interspersed(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "kvmstack:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "kvmstack",
		Usage:                "kvmstack cluster server and client",
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "server HTTP address", EnvVars: []string{"KVMSTACK_ADDR"}, Value: "127.0.0.1:8480"},
			&cli.StringFlag{Name: "token", Usage: "API token (default: the cached login token)", EnvVars: []string{"KVMSTACK_TOKEN"}},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: table or json", Value: "table"},
		},
		Commands: []*cli.Command{
			serverCommand(), loginCommand(), logoutCommand(), tokenCommand(),
			projectCommand(), userCommand(), roleCommand(), imageCommand(), flavorCommand(),
			hostCommand(), instanceCommand(), groupCommand(), networkCommand(), agentCommand(), devCommand(),
		},
	}
	for _, c := range app.Commands {
		addOutputFlag(c)
	}
	return app
}

// addOutputFlag lets -o follow the subcommand too (kvmstack image list -o json).
func addOutputFlag(c *cli.Command) {
	if c.Name != "server" && c.Action != nil {
		c.Flags = append(c.Flags, &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: table or json", Value: "table"})
	}
	for _, s := range c.Subcommands {
		addOutputFlag(s)
	}
}

// outputFormat is the innermost explicitly set -o, else table.
func outputFormat(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("output") {
			return ctx.String("output")
		}
	}
	return "table"
}

// tokenCache is the file login writes; it is created with mode 0600.
type tokenCache struct {
	Addr      string    `json:"addr"`
	Token     string    `json:"token"`
	Project   string    `json:"project_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

func cachePath() (string, error) {
	if d := os.Getenv("KVMSTACK_CONFIG_DIR"); d != "" {
		return filepath.Join(d, "token.json"), nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory: %w", err)
	}
	return filepath.Join(d, "kvmstack", "token.json"), nil
}

func saveToken(tc tokenCache) error {
	p, err := cachePath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	b, _ := json.MarshalIndent(tc, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write token cache: %w", err)
	}
	// WriteFile keeps the mode of an existing file: enforce 0600.
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("chmod token cache: %w", err)
	}
	return os.Rename(tmp, p)
}

func loadToken() (tokenCache, error) {
	var tc tokenCache
	p, err := cachePath()
	if err != nil {
		return tc, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return tc, err
	}
	return tc, json.Unmarshal(b, &tc)
}

// apiClient builds a client from flags, env and the token cache.
func apiClient(c *cli.Context) *client.Client {
	tok := c.String("token")
	addr := c.String("addr")
	if tok == "" {
		if tc, err := loadToken(); err == nil {
			tok = tc.Token
			if !c.IsSet("addr") && os.Getenv("KVMSTACK_ADDR") == "" && tc.Addr != "" {
				addr = tc.Addr
			}
		}
	}
	return client.New(addr, tok)
}

func ctxOf(c *cli.Context) context.Context { return c.Context }

// printResult prints v as JSON or, for -o table, as a table with the given
// columns (a slice) or as key/value lines (an object).
func printResult(c *cli.Context, v any, cols ...string) error {
	w := c.App.Writer
	format := outputFormat(c)
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if format != "table" {
		return fmt.Errorf("unknown output format %q (table or json)", format)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	var rows []map[string]any
	if err := json.Unmarshal(b, &rows); err == nil {
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
		for _, r := range rows {
			vals := make([]string, len(cols))
			for i, col := range cols {
				vals[i] = cell(r[col])
			}
			fmt.Fprintln(tw, strings.Join(vals, "\t"))
		}
		return nil
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		_, err = fmt.Fprintln(tw, string(b))
		return err
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\n", k, cell(obj[k]))
	}
	return nil
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprintf("%g", x)
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

func needArg(c *cli.Context, name string) (string, error) {
	if c.NArg() < 1 {
		return "", fmt.Errorf("missing %s argument", name)
	}
	return c.Args().First(), nil
}

func readPassword(c *cli.Context, flag string) (string, error) {
	if p := c.String(flag); p != "" {
		return p, nil
	}
	if p := os.Getenv("KVMSTACK_PASSWORD"); p != "" {
		return p, nil
	}
	fmt.Fprint(c.App.ErrWriter, "Password: ")
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 1024))
	if err != nil {
		return "", err
	}
	pw := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	if pw == "" {
		return "", errors.New("no password given (use --password, KVMSTACK_PASSWORD or stdin)")
	}
	return pw, nil
}
