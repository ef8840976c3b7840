package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/versions"
	"github.com/llmrt/llmrt/runtime/eval"
)

func (a *app) adapterVersionsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "versions NAME",
		Short: "List the versions of an adapter (NAME@N) and which one is promoted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vs, err := a.versions().List(args[0])
			if err != nil {
				return usageError{err}
			}
			if len(vs) == 0 {
				return fmt.Errorf("adapter %s has no versions (llmrt tune --out %s makes one)", args[0], args[0])
			}
			cur, ok, err := a.versions().Promoted(args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tPROMOTED\tMETHOD\tSTEPS\tFINAL LOSS\tCREATED")
			for _, v := range vs {
				mark := ""
				if ok && cur.N == v.N {
					mark = "*"
				}
				method, steps, loss := "", "", ""
				if ad, err := lora.ReadAdapter(v.Path); err == nil {
					method, steps, loss = ad.Meta["llmrt.train.method"], ad.Meta["llmrt.train.steps"], ad.Meta["llmrt.train.final_loss"]
				}
				created := ""
				if st, err := os.Stat(v.Path); err == nil {
					created = st.ModTime().Format("2006-01-02 15:04")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID(), mark, method, steps, loss, created)
			}
			return tw.Flush()
		},
	}
}

func (a *app) adapterPromoteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "promote NAME@N",
		Short: "Make NAME@N the version NAME serves (by hand, e.g. to roll back; llmrt eval --promote gates it)",
		Long: `promote points NAME at version N without an evaluation: use it to roll back
to an earlier version. Running servers serve the new version from their next
request on; every version stays loadable as BASE+NAME@N.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, n, err := versions.Parse(args[0])
			if err != nil || n == 0 {
				return usageError{fmt.Errorf("promote takes NAME@N, got %q", args[0])}
			}
			if err := a.versions().Promote(name, n); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s now serves %s@%d\n", name, name, n)
			return nil
		},
	}
}

// appendDecision records a promotion decision beside the adapter's
// versions (NAME.promotions.jsonl), so the history of what was promoted
// and why is kept.
func (a *app) appendDecision(name string, d versions.Decision) error {
	f, err := os.OpenFile(strings.TrimSuffix(a.adapterPath(name), ".gguf")+".promotions.jsonl", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	b, _ := json.Marshal(d)
	w.Write(append(b, '\n'))
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Sync()
}

// metricOf reads the gate's metric from an arm's summary.
func metricOf(s eval.ArmSummary, metric string) (float64, error) {
	switch metric {
	case "f1":
		return s.F1, nil
	case "exact":
		return s.ExactMatch, nil
	case "contains":
		return s.Contains, nil
	case "judged":
		return s.Judged, nil
	}
	return 0, fmt.Errorf("unknown --metric %q (f1, exact, contains or judged)", metric)
}

func armOf(rep *eval.Report, arm eval.Arm) (eval.ArmSummary, bool) {
	for _, s := range rep.Arms {
		if s.Arm == arm {
			return s, true
		}
	}
	return eval.ArmSummary{}, false
}

// promotionGate compares the candidate version (the report's fine-tuned
// arm) with the promoted version of its name (evaluated by again, run on
// the same questions) or, when none is promoted, with the base arm, and
// promotes it only when it is better by margin. It prints the scores, the
// gain and the margin; a refusal is an error that says why.
func (a *app) promotionGate(rep *eval.Report, candidate, metric string, margin float64, again func(adapterPath string) (*eval.Report, error)) error {
	name, n, err := versions.Parse(candidate)
	if err != nil || n == 0 {
		return usageError{fmt.Errorf("--promote needs --adapter NAME@N (a version in the adapters folder), got %q", candidate)}
	}
	ft, ok := armOf(rep, eval.ArmFT)
	if !ok {
		return fmt.Errorf("the report has no fine-tuned arm")
	}
	cs, err := metricOf(ft, metric)
	if err != nil {
		return usageError{err}
	}
	incumbent, is := "the base model", 0.0
	cur, promoted, err := a.versions().Promoted(name)
	if err != nil {
		return err
	}
	switch {
	case promoted && cur.N == n:
		return fmt.Errorf("%s is already the promoted version of %s", candidate, name)
	case promoted:
		incumbent = cur.ID()
		fmt.Fprintf(a.stderr, "evaluating the promoted version %s on the same questions\n", incumbent)
		prev, err := again(cur.Path)
		if err != nil {
			return fmt.Errorf("evaluate %s: %w", incumbent, err)
		}
		s, ok := armOf(prev, eval.ArmFT)
		if !ok {
			return fmt.Errorf("the report on %s has no fine-tuned arm", incumbent)
		}
		if is, err = metricOf(s, metric); err != nil {
			return usageError{err}
		}
	default:
		b, _ := armOf(rep, eval.ArmBase)
		if is, err = metricOf(b, metric); err != nil {
			return usageError{err}
		}
	}
	d := versions.Decide(metric, candidate, cs, incumbent, is, margin)
	if err := a.appendDecision(name, d); err != nil {
		return fmt.Errorf("record the promotion decision: %w", err)
	}
	fmt.Fprintf(a.stdout, "\npromotion gate (%s, margin %.4f): %s %.4f, %s %.4f, gain %+.4f\n", metric, margin, candidate, cs, incumbent, is, d.Gain)
	if !d.Promote {
		return fmt.Errorf("promotion refused: %s", d.Reason)
	}
	if err := a.versions().Promote(name, n); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "promoted %s: %s now serves it (%s)\n", candidate, name, d.Reason)
	return nil
}
