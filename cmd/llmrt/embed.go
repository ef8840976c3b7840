package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) embedCmd() *cobra.Command {
	var mf modelFlags
	var pretty bool
	cmd := &cobra.Command{
		Use:   "embed [flags] TEXT...",
		Short: "Print embeddings of texts as JSON",
		Long: `embed prints one unit-length embedding per text as a JSON array of
{"index", "text", "embedding"} objects, pooled with the model's pooling type
(mean when the GGUF names none).`,
		Example: `  llmrt embed -m stories260K "Once upon a time" "The cat"`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			e, refs, err := a.openEngine(ctx, &mf, 1)
			if err != nil {
				return err
			}
			defer e.Close()
			if len(refs) > 0 {
				return usageError{errors.New("embed does not apply adapters: give a base model")}
			}
			inputs := make([][]int32, len(args))
			for i, text := range args {
				if inputs[i], err = e.Tokenize(text, true, false); err != nil {
					return fmt.Errorf("tokenize text %d: %w", i, err)
				}
			}
			vecs, err := e.Embed(ctx, inputs)
			if err != nil {
				return err
			}
			type item struct {
				Index     int       `json:"index"`
				Text      string    `json:"text"`
				Embedding []float32 `json:"embedding"`
			}
			out := make([]item, len(args))
			for i := range args {
				out[i] = item{Index: i, Text: args[i], Embedding: vecs[i]}
			}
			enc := json.NewEncoder(a.stdout)
			if pretty {
				enc.SetIndent("", "  ")
			}
			return enc.Encode(out)
		},
	}
	mf.register(cmd)
	cmd.Flags().BoolVar(&pretty, "pretty", false, "indent the JSON")
	return cmd
}
