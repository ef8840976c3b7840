package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/quant"
	"github.com/llmrt/llmrt/models/store"
	"github.com/llmrt/llmrt/runtime/sched"
)

func (a *app) pullCmd() *cobra.Command {
	var name, sum string
	var ifMissing bool
	var retries int
	cmd := &cobra.Command{
		Use:   "pull SOURCE",
		Short: "Fetch a model into the local store, or import a local .gguf file",
		Long: `pull puts a GGUF model into the store ($LLMRT_HOME/models). SOURCE is
hf://OWNER/REPO/FILE.gguf[@REVISION] (Hugging Face), an http(s) URL, a known
name (` + strings.Join(catalogNames(), ", ") + `), or a local .gguf file, which
is copied into the store (the original can then be moved or deleted).
A model already installed from the same source is not fetched again: pull
compares its sha256 with the catalogue's, --sha256, the local file's or what
Hugging Face announces, and says "up to date".
Interrupted downloads resume; each failed attempt is logged with its error
before the next; the file is verified (sha256) before it is moved into place.
LLMRT_MIRROR (a directory or base URL) is tried first, for air-gapped sites;
HF_ENDPOINT replaces https://huggingface.co; HF_TOKEN is sent to Hugging Face
when set.`,
		Example: `  llmrt pull stories260K
  llmrt pull hf://ggml-org/models/tinyllamas/stories260K.gguf
  llmrt pull ./my-model-q8_0.gguf --name my-model
  LLMRT_MIRROR=/mnt/models llmrt pull hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0.gguf`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.openStore()
			if err != nil {
				return err
			}
			if ifMissing {
				n := name
				if n == "" {
					n = strings.TrimSuffix(args[0][strings.LastIndex(args[0], "/")+1:], ".gguf")
				}
				if p, err := s.Resolve(n); err == nil {
					fmt.Fprintf(a.stdout, "%s is already installed (%s)\n", n, p)
					return nil
				}
			}
			if retries < 0 {
				return usageError{fmt.Errorf("--retries %d: want 0 or more", retries)}
			}
			var bar *progress
			opt := store.PullOptions{
				Name: name, SHA256: sum, Retries: retries, Logger: a.log,
				Mirror: os.Getenv("LLMRT_MIRROR"), Token: os.Getenv("HF_TOKEN"), HFEndpoint: os.Getenv("HF_ENDPOINT"),
				Progress: func(done, total int64) {
					if bar == nil {
						bar = newProgress(a.stderr, a.log, "pull "+args[0], "bytes", total)
					}
					bar.Set(done, total)
				},
			}
			if retries == 0 {
				opt.Retries = -1 // Pull's default is 5; 0 retries is asked for
			}
			m, err := s.Pull(cmd.Context(), args[0], opt)
			if bar != nil {
				if err != nil {
					bar.Abort()
				} else {
					bar.Finish()
				}
			}
			if err != nil {
				return err
			}
			switch {
			case m.UpToDate:
				fmt.Fprintf(a.stdout, "%s is up to date (%s, sha256 %s)\n", m.Name, sched.FormatBytes(m.Size), m.SHA256)
			case strings.Contains(m.Source, "://"):
				fmt.Fprintf(a.stdout, "pulled %s (%s, sha256 %s)\n", m.Name, sched.FormatBytes(m.Size), m.SHA256)
			default:
				fmt.Fprintf(a.stdout, "imported %s as %s (%s, sha256 %s)\n", m.Source, m.Name, sched.FormatBytes(m.Size), m.SHA256)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "store name (default: the file name without .gguf)")
	cmd.Flags().StringVar(&sum, "sha256", "", "expected sha256 of the file")
	cmd.Flags().BoolVar(&ifMissing, "if-missing", false, "do nothing when the model is already installed")
	cmd.Flags().IntVar(&retries, "retries", 5, "attempts after a failed one before giving up")
	return cmd
}

func catalogNames() []string {
	var names []string
	for n := range store.Catalog() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (a *app) modelsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List the models in the store (subcommands: show, rm)",
		Long: `models lists the models in the store ($LLMRT_HOME/models). -m takes these
names, a .gguf path, or BASE+ADAPTER with an adapter from llmrt adapter ls.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.openStore()
			if err != nil {
				return err
			}
			list, err := s.List()
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintf(a.stdout, "no models in %s; try `llmrt pull %s`\n", a.home, defaultModel)
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tMODIFIED\tSHA256")
			for _, m := range list {
				sum := m.SHA256
				if len(sum) > 12 {
					sum = sum[:12]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, sched.FormatBytes(m.Size), m.Modified.Format(time.DateTime), sum)
			}
			return tw.Flush()
		},
	}
	show := a.showCmd()
	rm := &cobra.Command{
		Use:   "rm MODEL...",
		Short: "Remove models from the store",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.openStore()
			if err != nil {
				return err
			}
			for _, n := range args {
				if err := s.Remove(n); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "removed", n)
			}
			return nil
		},
	}
	cmd.AddCommand(show, rm)
	return cmd
}

// showCmd is `llmrt show` (also `llmrt models show`).
func (a *app) showCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "show MODEL",
		Short: "Show a model's (and its adapter's) metadata without loading it",
		Long: `show prints what a model is without loading it: architecture, parameters,
context length, tensor types, vocabulary and chat template. MODEL is anything -m
takes: a store name, a .gguf path, or BASE+ADAPTER (then the adapter too).`,
		Example: `  llmrt show stories260K
  llmrt show stories260K+my-adapter`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.resolveTarget(cmd.Context(), args[0], false)
			if err != nil {
				return err
			}
			if err := a.showModel(t.Path, all); err != nil {
				return err
			}
			for _, ad := range t.Adapters {
				if err := a.showAdapter(ad); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "print every metadata key, including long arrays")
	return cmd
}

// showAdapter prints an adapter's shape.
func (a *app) showAdapter(n names.Adapter) error {
	ad, err := lora.ReadAdapter(n.Path)
	if err != nil {
		return err
	}
	targets := map[string]bool{}
	for name := range ad.Pairs {
		// blk.N.attn_q.weight -> attn_q
		parts := strings.Split(name, ".")
		if len(parts) >= 3 {
			targets[parts[2]] = true
		}
	}
	var tl []string
	for t := range targets {
		tl = append(tl, t)
	}
	sort.Strings(tl)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nadapter\t%s\n", n.Name)
	fmt.Fprintf(tw, "file\t%s\n", n.Path)
	if n.Base != "" {
		fmt.Fprintf(tw, "trained for\t%s\n", n.Base)
	}
	fmt.Fprintf(tw, "architecture\t%s\n", ad.Arch)
	fmt.Fprintf(tw, "rank, alpha\t%d, %g\n", ad.Rank(), ad.Alpha)
	fmt.Fprintf(tw, "targets\t%s (%d weights)\n", strings.Join(tl, ", "), len(ad.Pairs))
	fmt.Fprintf(tw, "size\t%s\n", sched.FormatBytes(n.Size))
	return tw.Flush()
}

// modelPath resolves a name or path without fetching anything.
func (a *app) modelPath(name string) (string, error) {
	if st, err := os.Stat(name); err == nil && !st.IsDir() {
		return name, nil
	}
	s, err := a.openStore()
	if err != nil {
		return "", err
	}
	return s.Resolve(name)
}

func (a *app) showModel(path string, all bool) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	arch := f.Architecture()
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "file\t%s\n", path)
	fmt.Fprintf(tw, "architecture\t%s\n", arch)
	if n, ok := f.String("general.name"); ok {
		fmt.Fprintf(tw, "name\t%s\n", n)
	}
	fmt.Fprintf(tw, "parameters\t%s\n", humanCount(f.ParamCount()))
	fmt.Fprintf(tw, "tensor bytes\t%s\n", sched.FormatBytes(f.TensorBytes()))
	fmt.Fprintf(tw, "tensors\t%d (%s)\n", len(f.Tensors), tensorTypes(f))
	for _, k := range []string{"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count", "attention.head_count_kv"} {
		if v, ok := f.Uint(arch + "." + k); ok {
			fmt.Fprintf(tw, "%s\t%d\n", k, v)
		}
	}
	if toks, ok := f.Strings("tokenizer.ggml.tokens"); ok {
		model, _ := f.String("tokenizer.ggml.model")
		fmt.Fprintf(tw, "vocabulary\t%d tokens (%s)\n", len(toks), model)
	}
	if t, ok := f.String("tokenizer.chat_template"); ok {
		first := strings.SplitN(t, "\n", 2)[0]
		if len(first) > 60 {
			first = first[:60] + "…"
		}
		fmt.Fprintf(tw, "chat template\t%d bytes: %s\n", len(t), first)
	} else {
		fmt.Fprintf(tw, "chat template\tnone\n")
	}
	if all {
		fmt.Fprintf(tw, "\nmetadata\t\n")
		for _, kv := range f.KV {
			fmt.Fprintf(tw, "%s\t%v\n", kv.Key, kv.Value)
		}
	}
	return tw.Flush()
}

// tensorTypes counts a model's tensors by type: "F16×5, F32×11".
func tensorTypes(f *gguf.File) string {
	types := map[string]int{}
	for _, t := range f.Tensors {
		types[t.Type.String()]++
	}
	var tl []string
	for k, v := range types {
		tl = append(tl, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(tl)
	return strings.Join(tl, ", ")
}

func (a *app) quantizeCmd() *cobra.Command {
	var typ string
	var threads int
	cmd := &cobra.Command{
		Use:   "quantize MODEL OUTPUT",
		Short: "Quantize a model with llama.cpp (Q8_0, Q4_K_M, ...)",
		Long: `quantize converts MODEL (a store name or path) to OUTPUT. An OUTPUT without a
slash or .gguf suffix is a store name. Types: F32, F16, BF16, Q4_0, Q8_0,
Q4_K_M, Q5_K_M, Q6_K.

A quantized type stores rows of a weight matrix in blocks (32 values for
Q4_0/Q8_0, 256 for the K types). Where a row does not split into blocks,
the K types fall back per tensor (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0,
or F16 when even blocks of 32 do not fit) and the summary says which
tensors did and why; Q4_0 and Q8_0 have no fallback and refuse the model,
naming the types that do fit.`,
		Example: `  llmrt quantize ./qwen2.5-0.5b-f16.gguf qwen2.5-0.5b-q8 --type Q8_0`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ft, err := kernels.ParseFType(typ)
			if err != nil {
				return usageError{err}
			}
			spec, _ := quant.SpecOf(ft)
			in, err := a.modelPath(args[0])
			if err != nil {
				return err
			}
			src, err := gguf.Open(in)
			if err != nil {
				return err
			}
			out := args[1]
			if !strings.Contains(out, "/") && !strings.HasSuffix(out, ".gguf") {
				s, err := a.openStore()
				if err != nil {
					return err
				}
				out = s.PathFor(out)
			}
			start := time.Now()
			a.log.Info("quantizing", "in", in, "out", out, "type", spec.Name)
			if err := kernels.Quantize(cmd.Context(), in, out, ft, threads); err != nil {
				if strings.Contains(err.Error(), "requantizing from type") {
					return fmt.Errorf("quantize %s to %s: the model is already quantized (%s) and llama.cpp does not quantize twice; quantize from its F16, BF16 or F32 original",
						in, spec.Name, tensorTypes(src))
				}
				if why := quant.Unfit(src, spec); why != nil {
					return fmt.Errorf("quantize %s to %s: %w", in, spec.Name, why)
				}
				return err
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s (%s) in %s\n", out, sched.FormatBytes(st.Size()), time.Since(start).Round(time.Millisecond))
			res, err := gguf.Open(out)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "tensors by type:")
			for _, l := range quant.Summary(src, quant.Explain(src, res, spec), spec) {
				fmt.Fprintln(a.stdout, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&typ, "type", "Q8_0", "target type")
	cmd.Flags().IntVarP(&threads, "threads", "t", 0, "threads (default: all cores)")
	return cmd
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
