package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/versions"
	"github.com/llmrt/llmrt/runtime/sched"
)

func (a *app) adapterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "adapter",
		Short: "List, export, import and merge LoRA adapters",
		Long: `adapter manages LoRA adapters: the GGUF files llmrt tune writes and llama.cpp
loads, kept in $LLMRT_HOME/adapters, and their Hugging Face PEFT form
(adapter_model.safetensors + adapter_config.json). An adapter NAME there is
used as -m BASE+NAME (run, serve, eval, the API) or --adapter NAME.`,
	}
	cmd.AddCommand(a.adapterListCmd(), a.adapterExportCmd(), a.adapterImportCmd(), a.adapterMergeCmd(), a.adapterVersionsCmd(), a.adapterPromoteCmd())
	return cmd
}

// resolveAdapter accepts a path, or a NAME (its promoted version) or
// NAME@N in the adapters folder.
func (a *app) resolveAdapter(s string) (string, error) {
	ad, err := a.adapters().Find(s)
	if err != nil {
		return "", err
	}
	return ad.Path, nil
}

// versions is the adapters folder's version store.
func (a *app) versions() versions.Dir { return versions.Dir(filepath.Join(a.home, "adapters")) }

func (a *app) adapterListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the adapters in $LLMRT_HOME/adapters (name, the base they were trained for, shape)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := a.adapters().List()
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintf(a.stdout, "no adapters in %s; llmrt tune --out NAME makes one\n", a.adapters())
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBASE\tARCH\tRANK\tALPHA\tTENSORS\tSIZE\tMODIFIED")
			for _, l := range list {
				ad, err := lora.ReadAdapter(l.Path)
				if err != nil {
					fmt.Fprintf(a.stderr, "skipping %s: %v\n", l.Name, err)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%g\t%d\t%s\t%s\n", l.Name, l.Base, ad.Arch, ad.Rank(), ad.Alpha,
					2*len(ad.Pairs), sched.FormatBytes(l.Size), l.Modified.Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

// adapterAndBase checks --out, reads the adapter (a path or a name) and
// fills model with the base the adapter records when -m is not given.
func (a *app) adapterAndBase(name, out string, model *string) (string, *lora.Adapter, error) {
	if out == "" {
		return "", nil, usageError{errors.New("--out is required")}
	}
	p, err := a.resolveAdapter(name)
	if err != nil {
		return "", nil, err
	}
	ad, err := lora.ReadAdapter(p)
	if err != nil {
		return "", nil, err
	}
	if *model == "" {
		*model = ad.Meta["llmrt.base"]
	}
	if *model == "" {
		return "", nil, usageError{errors.New("the adapter does not name its base: pass -m BASE")}
	}
	return p, ad, nil
}

// baseHeads reads the head counts of the base (needed for llama's Q/K
// row order).
func (a *app) baseHeads(cmd *cobra.Command, model string) (string, lora.Heads, error) {
	path, err := a.resolveModel(cmd.Context(), model)
	if err != nil {
		return "", lora.Heads{}, err
	}
	f, err := gguf.Open(path)
	if err != nil {
		return "", lora.Heads{}, err
	}
	h, err := lora.HeadsOf(f)
	return f.Architecture(), h, err
}

func (a *app) adapterExportCmd() *cobra.Command {
	var model, out string
	cmd := &cobra.Command{
		Use:     "export ADAPTER --out DIR [-m BASE]",
		Short:   "Write an adapter in Hugging Face PEFT form",
		Example: `  llmrt adapter export support --out ./support-peft -m qwen2.5-0.5b`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, ad, err := a.adapterAndBase(args[0], out, &model)
			if err != nil {
				return err
			}
			arch, heads, err := a.baseHeads(cmd, model)
			if err != nil {
				return err
			}
			if arch != ad.Arch {
				return fmt.Errorf("the adapter is for %s, %s is %s", ad.Arch, model, arch)
			}
			if err := lora.ExportPEFT(ad, heads, model, out); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "exported %s (rank %d, %d pairs) to %s\n", p, ad.Rank(), len(ad.Pairs), out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&model, "model", "m", "", "base model (default: the one recorded in the adapter)")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output folder")
	return cmd
}

func (a *app) adapterImportCmd() *cobra.Command {
	var model, out string
	cmd := &cobra.Command{
		Use:     "import DIR -m BASE --out ADAPTER",
		Short:   "Convert a Hugging Face PEFT LoRA adapter to GGUF",
		Example: `  llmrt adapter import ./my-peft-adapter -m qwen2.5-0.5b --out my-adapter`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" || out == "" {
				return usageError{errors.New("-m BASE and --out are required")}
			}
			arch, heads, err := a.baseHeads(cmd, model)
			if err != nil {
				return err
			}
			ad, err := lora.ImportPEFT(args[0], arch, heads)
			if err != nil {
				return err
			}
			ad.Meta["llmrt.base"] = model
			p := a.adapterPath(out)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := ad.Write(p); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "imported %d pairs (rank %d, alpha %g) to %s\n", len(ad.Pairs), ad.Rank(), ad.Alpha, p)
			return nil
		},
	}
	cmd.Flags().StringVarP(&model, "model", "m", "", "base model the adapter was trained for")
	cmd.Flags().StringVarP(&out, "out", "o", "", "adapter file, or a NAME for $LLMRT_HOME/adapters/NAME.gguf")
	return cmd
}

func (a *app) adapterMergeCmd() *cobra.Command {
	var model, out string
	var scale float64
	cmd := &cobra.Command{
		Use:   "merge ADAPTER -m BASE --out MODEL",
		Short: "Write a model with the adapter folded into its weights",
		Long: `merge writes BASE with ADAPTER folded in (W += scale * alpha/r * B*A, in
float32, stored back in each weight's own type), for deployments that serve
one adapter only. An OUTPUT without a slash or .gguf suffix is a store name.`,
		Example: `  llmrt adapter merge support -m qwen2.5-0.5b --out qwen2.5-0.5b-support`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, ad, err := a.adapterAndBase(args[0], out, &model)
			if err != nil {
				return err
			}
			basePath, err := a.resolveModel(cmd.Context(), model)
			if err != nil {
				return err
			}
			dst := out
			if !strings.ContainsRune(out, filepath.Separator) && !strings.HasSuffix(out, ".gguf") {
				st, err := a.openStore()
				if err != nil {
					return err
				}
				dst = st.PathFor(out)
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			bar := newProgress(a.stderr, a.log, "merge", "tensors", int64(len(ad.Pairs)))
			if err := lora.Merge(basePath, ad, float32(scale), dst, func(done, total int) { bar.Set(int64(done), int64(total)) }); err != nil {
				bar.Abort()
				return err
			}
			bar.Finish()
			fmt.Fprintf(a.stdout, "merged %s into %s: %s\n", p, model, dst)
			return nil
		},
	}
	cmd.Flags().StringVarP(&model, "model", "m", "", "base model (default: the one recorded in the adapter)")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output GGUF path or store name")
	cmd.Flags().Float64Var(&scale, "scale", 1, "adapter strength")
	return cmd
}
