module github.com/llmrt/llmrt/scripts/hnswbench

go 1.26

require (
	github.com/coder/hnsw v0.6.1
	github.com/llmrt/llmrt v0.0.0
	golang.org/x/sys v0.46.0
)

require (
	github.com/chewxy/math32 v1.11.0 // indirect
	github.com/google/renameio v1.0.1 // indirect
	github.com/viterin/partial v1.1.0 // indirect
	github.com/viterin/vek v0.4.2 // indirect
	golang.org/x/exp v0.0.0-20250218142911-aa4b98e5adaa // indirect
)

replace github.com/llmrt/llmrt => ../..
