package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/sched"
)

// newScheduler builds the memory scheduler over ggml's devices (and NVML's
// view of the GPUs, when the library is there).
func (a *app) newScheduler() (*sched.Scheduler, error) {
	var backends []sched.BackendDevice
	for _, d := range kernels.Devices() {
		backends = append(backends, sched.BackendDevice{Name: d.Name, Description: d.Description, Type: string(d.Type),
			Total: d.Total, Free: d.Free, ID: d.ID, PCIBusID: d.PCIBusID})
	}
	s, err := sched.New(sched.Config{Backends: backends, Logger: a.log})
	if err != nil {
		return nil, fmt.Errorf("memory scheduler: %w", err)
	}
	return s, nil
}

func (a *app) gpuCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "gpu",
		Short: "Show devices, memory budgets, reservations and the scheduler's decisions",
		Long: `gpu prints what the memory scheduler sees: every device (GPUs through NVML
and ggml, else the CPU's RAM), its budget and free memory, the reservations by
consumer (model weights, KV caches, compute buffers, training jobs, indexes),
queued requests, and the recent decisions with their reasons. It asks a
running server (--addr) first, so it shows what that server decided; with no
server it shows this machine's devices and budgets.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			snap, source, err := a.fetchSnapshot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(snap)
			}
			fmt.Fprintf(a.stdout, "(%s)\n", source)
			return sched.Format(a.stdout, snap)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", serverAddr(), "address of a running llmrt serve (env LLMRT_ADDR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	return cmd
}

func (a *app) fetchSnapshot(ctx context.Context, addr string) (sched.Snapshot, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+addr+"/v1/system", nil)
	if key := os.Getenv("LLMRT_API_KEY"); key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		defer resp.Body.Close()
		var body struct {
			Scheduler *sched.Snapshot `json:"scheduler"`
		}
		if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil && body.Scheduler != nil {
			return *body.Scheduler, "from the server at " + addr, nil
		}
	}
	s, err := a.newScheduler()
	if err != nil {
		return sched.Snapshot{}, "", err
	}
	defer s.Close()
	return s.Snapshot(), "no server at " + addr + "; this machine's devices", nil
}
