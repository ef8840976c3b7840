//go:build race

package index

// raceEnabled shrinks the large tests under the race detector.
const raceEnabled = true
