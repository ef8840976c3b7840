package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// sseEvent is one server-sent event: the event name (empty for the default
// "message" event) and its data lines joined by "\n".
type sseEvent struct {
	Name string
	Data string
}

// sseReader reads server-sent events as OpenAI-compatible servers send them:
// "data: {...}" lines ended by a blank line, "data: [DONE]" at the end.
// It accepts LF and CRLF line ends, skips comment lines (": keep-alive"),
// ignores the id and retry fields, and turns llama.cpp's non-standard
// "error: {...}" field into an event named "error".
type sseReader struct {
	br *bufio.Reader
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next event with data. At the end of the stream it returns
// io.EOF; an event cut off by the end of the stream is still returned.
func (r *sseReader) Next() (sseEvent, error) {
	var (
		ev      sseEvent
		data    strings.Builder
		hasData bool
	)
	for {
		line, err := r.br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return sseEvent{}, fmt.Errorf("reading event stream: %w", err)
		}
		atEOF := err != nil
		line = strings.TrimSuffix(line, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			if hasData {
				ev.Data = data.String()
				return ev, nil
			}
			if atEOF {
				return sseEvent{}, io.EOF
			}
			ev = sseEvent{} // an event without data is dropped
			continue
		}
		if !strings.HasPrefix(line, ":") { // ":..." is a comment
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "data":
				if hasData {
					data.WriteByte('\n')
				}
				data.WriteString(value)
				hasData = true
			case "event":
				ev.Name = value
			case "error": // llama.cpp: "error: {json}"
				ev.Name = "error"
				if hasData {
					data.WriteByte('\n')
				}
				data.WriteString(value)
				hasData = true
			}
		}
		if atEOF {
			if hasData {
				ev.Data = data.String()
				return ev, nil
			}
			return sseEvent{}, io.EOF
		}
	}
}
