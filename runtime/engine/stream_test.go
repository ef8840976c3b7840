package engine

import (
	"context"
	"io"
	"testing"
)

// A reader that falls behind gets the tokens since its last read in one
// chunk, except the first chunk with text, which always arrives alone.
func TestStreamCoalescesAfterTheFirstText(t *testing.T) {
	ctx := context.Background()
	s := newStream(ctx, Request{}, nil, nil, "")
	s.push(Chunk{Tokens: []Token{{ID: 1}}}) // a token whose text is held back
	for i, txt := range []string{"Once", " upon", " a", " time"} {
		s.push(Chunk{Text: txt, Tokens: []Token{{ID: int32(i + 2)}}})
	}
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	var got []string
	for {
		c, err := s.Next(ctx)
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got = append(got, c.Text)
	}
	if len(got) != 2 || got[0] != "Once" || got[1] != " upon a time" {
		t.Fatalf("chunks %q, want [\"Once\" \" upon a time\"]", got)
	}
}
