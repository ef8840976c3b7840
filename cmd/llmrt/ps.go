package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// serverAddr is the --addr default of the commands that talk to a running
// server: LLMRT_ADDR, else serve's default.
func serverAddr() string {
	if a := os.Getenv("LLMRT_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
}

// callServer sends one request to a running llmrt serve at addr (with
// LLMRT_API_KEY as its Bearer key) and decodes the JSON answer into out.
func callServer(ctx context.Context, addr, method, path string, body, out any) error {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("server address %q: %w", addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key := os.Getenv("LLMRT_API_KEY"); key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no llmrt server answers at %s (start one with llmrt serve, or set --addr / LLMRT_ADDR): %w", addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read the answer of %s: %w", addr, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("the server at %s wants an API key: set LLMRT_API_KEY", addr)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Message string }
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return errors.New(e.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
	}
	return nil
}

func (a *app) psCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the models a running server has loaded, their memory and until when",
		Long: `ps asks a running llmrt serve (--addr, env LLMRT_ADDR; key from LLMRT_API_KEY)
which models it has loaded: their memory by device, sequences and context, the
requests running, the adapters attached, and when keep-alive unloads them
("forever" for models loaded with serve -m, or with --keep-alive -1s).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var sys struct {
				Models []registry.LoadedModel `json:"models"`
			}
			if err := callServer(cmd.Context(), addr, http.MethodGet, "/v1/system", nil, &sys); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sys.Models)
			}
			if len(sys.Models) == 0 {
				fmt.Fprintln(a.stdout, "no models loaded")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tPROCESSOR\tCONTEXT\tREQUESTS\tADAPTERS\tUNTIL")
			now := time.Now()
			for _, m := range sys.Models {
				ads := strings.Join(m.Adapters, ",")
				if ads == "" {
					ads = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d×%d\t%d\t%s\t%s\n", m.Name, sched.FormatBytes(m.SizeBytes), processor(m.MemoryByDevice),
					m.Parallel, m.CtxPerSeq, m.Busy, ads, until(m, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&addr, "addr", serverAddr(), "address of a running llmrt serve (env LLMRT_ADDR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's list as JSON")
	return cmd
}

// processor says where a model's memory is, as shares by device ("100%
// CPU", "75% CUDA0, 25% CPU").
func processor(byDev map[string]int64) string {
	var total int64
	devs := make([]string, 0, len(byDev))
	for d, n := range byDev {
		total += n
		devs = append(devs, d)
	}
	if total == 0 {
		return "-"
	}
	sort.Slice(devs, func(i, j int) bool { return byDev[devs[i]] > byDev[devs[j]] })
	var parts []string
	for _, d := range devs {
		if byDev[d] > 0 {
			parts = append(parts, fmt.Sprintf("%.0f%% %s", 100*float64(byDev[d])/float64(total), d))
		}
	}
	return strings.Join(parts, ", ")
}

// until says when keep-alive unloads a model.
func until(m registry.LoadedModel, now time.Time) string {
	switch {
	case m.Busy > 0 && m.KeepAliveSeconds == 0:
		return "unloads after its requests"
	case m.Busy > 0:
		return "in use"
	case m.ExpiresAt == nil:
		return "forever"
	}
	left := m.ExpiresAt.Sub(now).Round(time.Second)
	if left <= 0 {
		return "now"
	}
	return fmt.Sprintf("%s from now", left)
}

func (a *app) stopCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "stop MODEL...",
		Short: "Unload models from a running server",
		Long: `stop asks a running llmrt serve (--addr, env LLMRT_ADDR; key from
LLMRT_API_KEY) to unload MODEL (a base, BASE+ADAPTER or an adapter's name
unloads its base), even one loaded with serve -m: it sets the model's
keep-alive to 0 (POST /v1/system/keep_alive), so a model serving requests
unloads when they finish. The next request for it loads it again.`,
		Example: `  llmrt stop stories260K`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, m := range args {
				// The answer is the model, still loaded while requests use it.
				var out struct {
					Name string `json:"name"`
					Busy int    `json:"active_requests"`
				}
				if err := callServer(cmd.Context(), addr, http.MethodPost, "/v1/system/keep_alive", map[string]any{"model": m, "keep_alive": 0}, &out); err != nil {
					return fmt.Errorf("stop %s: %w", m, err)
				}
				if out.Name != "" && out.Busy > 0 {
					fmt.Fprintf(a.stdout, "%s unloads after its %d running requests\n", m, out.Busy)
				} else {
					fmt.Fprintf(a.stdout, "unloaded %s\n", m)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", serverAddr(), "address of a running llmrt serve (env LLMRT_ADDR)")
	return cmd
}
