package engine

import (
	"context"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/llmrt/llmrt/kernels"
)

// TopLogprob is one alternative token with its log-probability.
type TopLogprob struct {
	ID      int32   `json:"id"`
	Text    string  `json:"text"`
	Logprob float32 `json:"logprob"`
}

// Token is one generated token.
type Token struct {
	ID      int32        `json:"id"`
	Text    string       `json:"text"` // the token's bytes (may be part of a UTF-8 character)
	Logprob float32      `json:"logprob"`
	Top     []TopLogprob `json:"top,omitempty"`
}

// Chunk is what a stream delivers: new text (always whole UTF-8
// characters, with any stop string removed) and the tokens behind it.
type Chunk struct {
	Text   string
	Tokens []Token
}

// Finish reasons, as OpenAI names them.
const (
	FinishStop   = "stop"   // end-of-generation token or a stop string
	FinishLength = "length" // max tokens or the context is full
)

// Result is a finished generation.
type Result struct {
	Text             string        `json:"text"`
	Tokens           []Token       `json:"tokens,omitempty"`
	FinishReason     string        `json:"finish_reason"`
	PromptTokens     int           `json:"prompt_tokens"`
	CachedTokens     int           `json:"cached_tokens"`
	CompletionTokens int           `json:"completion_tokens"`
	TimeToFirstToken time.Duration `json:"time_to_first_token"`
	Duration         time.Duration `json:"duration"`
}

// Stream is one request's output. Next returns chunks until io.EOF; then
// Result has the finish reason and usage. Close abandons the request.
type Stream struct {
	ctx    context.Context
	cancel context.CancelFunc
	req    Request
	smp    *kernels.Sampler
	set    []kernels.AdapterScale // llama.cpp's adapter set (pathLlama)
	key    string                 // adapter key: prefix-cache and grouping key
	path   streamPath
	ad     *adapterEntry // the adapter of a decoder request (nil: none)
	scale  float32       // its user scale

	onClose   func()
	closeOnce sync.Once

	// Guarded by mu: written by the engine loop, read by the consumer.
	mu      sync.Mutex
	pending []Chunk
	// quiet is set by Collect: the consumer wants only the result, so the
	// loop keeps no chunks and wakes the consumer once, at the end,
	// instead of once per token. On a machine with as many cores as
	// decode threads, every wake-up takes a core from llama.cpp's workers.
	quiet bool
	// held: the last pending chunk waits for the next wake-up (a
	// WakeInterval held its push back), even if the reader comes back for
	// it sooner. Chunks before it may be handed out.
	held bool
	// solo: the last pending chunk is the stream's first with text, which
	// nothing is merged into; textSeen: that chunk exists.
	solo, textSeen bool
	done           bool
	err            error
	result         Result
	notify         chan struct{}

	// Loop-owned state.
	lastWake  time.Time // when push last woke the consumer
	start     time.Time
	firstTok  time.Time
	generated []Token
	rawText   []byte // detokenized bytes not yet released
	sentLen   int    // bytes of rawText already sent (released text)
	text      strings.Builder
	waited    int // admission rounds spent waiting
}

func newStream(ctx context.Context, req Request, smp *kernels.Sampler, set []kernels.AdapterScale, key string) *Stream {
	cctx, cancel := context.WithCancel(ctx)
	return &Stream{ctx: cctx, cancel: cancel, req: req, smp: smp, set: set, key: key, notify: make(chan struct{}, 1), start: time.Now()}
}

// Next blocks for the next chunk. It returns io.EOF when the generation is
// finished, or the error that ended it.
func (s *Stream) Next(ctx context.Context) (Chunk, error) {
	for {
		s.mu.Lock()
		if n := len(s.pending); n > 1 || (n == 1 && (!s.held || s.done)) {
			c := s.pending[0]
			s.pending = s.pending[1:]
			s.mu.Unlock()
			return c, nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return Chunk{}, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Chunk{}, ctx.Err()
		}
	}
}

// Result returns the finished generation (valid after Next returned io.EOF).
func (s *Stream) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Collect waits for the generation to end and returns its result. It is
// for consumers that do not stream: from the call on, the stream keeps no
// chunks and wakes the caller only when the generation ends. Next must not
// be used after it.
func (s *Stream) Collect(ctx context.Context) (Result, error) {
	defer s.Close()
	s.mu.Lock()
	s.quiet = true
	s.pending = nil
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done, err, res := s.done, s.err, s.result
		s.mu.Unlock()
		if done {
			if err != nil {
				return Result{}, err
			}
			return res, nil
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
}

// Close abandons the request: the engine frees its sequence at the next step.
func (s *Stream) Close() { s.cancel() }

// push hands a chunk to the consumer without blocking the loop.
func (s *Stream) push(c Chunk) {
	if c.Text == "" && len(c.Tokens) == 0 {
		return
	}
	wake := true
	if every := s.req.WakeInterval; every > 0 {
		now := time.Now()
		if !s.lastWake.IsZero() && now.Sub(s.lastWake) < every {
			wake = false // the chunk waits, merged with the next, for a later wake-up
		} else {
			s.lastWake = now
		}
	}
	s.mu.Lock()
	if s.quiet {
		s.mu.Unlock()
		return
	}
	if n := len(s.pending); n > 0 && !s.solo {
		// Coalesce with an unread chunk: the reader is behind.
		last := &s.pending[n-1]
		last.Text += c.Text
		last.Tokens = append(last.Tokens, c.Tokens...)
		s.held = s.held && !wake
	} else {
		s.pending = append(s.pending, c)
		s.solo, s.held = false, !wake
	}
	// The first chunk with text goes out alone, however far behind the
	// reader is: a client sees the first token as its own event (its time
	// to first token), and the rest of the answer after it.
	if !s.textSeen && c.Text != "" {
		s.textSeen, s.solo = true, true
	}
	s.mu.Unlock()
	if wake {
		s.signal()
	}
}

func (s *Stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// finish ends the stream with a result or an error and frees its sampler.
func (s *Stream) finish(res Result, err error) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	s.err = err
	s.result = res
	s.mu.Unlock()
	s.signal()
	s.release()
}

// finishEarly releases a stream that never reached the loop.
func (s *Stream) finishEarly() {
	s.finish(Result{}, ErrQueueFull)
	s.cancel()
}

func (s *Stream) release() {
	s.closeOnce.Do(func() {
		s.smp.Close()
		if s.onClose != nil {
			s.onClose()
		}
	})
}

// addToken records a sampled token and releases the text that can no
// longer be part of a stop string. It reports whether a stop string ended
// the generation.
func (s *Stream) addToken(tok Token) (stopped bool) {
	if s.firstTok.IsZero() {
		s.firstTok = time.Now()
	}
	s.generated = append(s.generated, tok)
	s.rawText = append(s.rawText, tok.Text...)
	// Only whole UTF-8 characters are released.
	valid := len(s.rawText)
	for valid > s.sentLen && !utf8.Valid(s.rawText[s.sentLen:valid]) {
		valid--
		if len(s.rawText)-valid >= utf8.UTFMax {
			valid = len(s.rawText) // not a split character: invalid bytes, release as is
			break
		}
	}
	unsent := string(s.rawText[s.sentLen:valid])
	for _, stop := range s.req.Stop {
		if stop == "" {
			continue
		}
		// Search the window that could contain a stop string ending in new text.
		from := max(0, s.sentLen-len(stop)+1)
		if i := strings.Index(string(s.rawText[from:valid]), stop); i >= 0 {
			cut := from + i
			if cut > s.sentLen {
				s.emit(string(s.rawText[s.sentLen:cut]), []Token{tok})
			} else {
				s.emit("", []Token{tok})
			}
			s.sentLen = cut
			s.rawText = s.rawText[:cut]
			return true
		}
	}
	// Hold back a suffix that is a prefix of some stop string.
	hold := 0
	for _, stop := range s.req.Stop {
		for k := min(len(stop)-1, len(unsent)); k > hold; k-- {
			if strings.HasSuffix(unsent, stop[:k]) {
				hold = k
				break
			}
		}
	}
	release := unsent[:len(unsent)-hold]
	s.emit(release, []Token{tok})
	s.sentLen += len(release)
	return false
}

func (s *Stream) emit(text string, toks []Token) {
	s.text.WriteString(text)
	s.push(Chunk{Text: text, Tokens: toks})
}

// flush releases held-back text at the end of a generation that did not
// stop on a stop string.
func (s *Stream) flush() {
	if s.sentLen < len(s.rawText) {
		rest := string(s.rawText[s.sentLen:])
		s.text.WriteString(rest)
		s.push(Chunk{Text: rest})
		s.sentLen = len(s.rawText)
	}
}

// flushIfNoStop releases held-back text when generation ended on an
// end-of-generation token (the held text was not a stop string after all).
func (s *Stream) flushIfNoStop() {
	if s.sentLen < len(s.rawText) {
		s.flush()
	}
}
