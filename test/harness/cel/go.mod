// cel-go, Google's reference implementation of CEL, to compile and evaluate the expressions
// edge-registrar renders for Envoy's istio.stats filter. Its own module, small and quick to
// build; pinned to the newest release (the module moved from github.com/google/cel-go to
// cel.dev/cel-go at v0.32).
module edge-registrar/test/harness/cel

go 1.26.0

require cel.dev/cel-go v0.33.2

require (
	cel.dev/expr v0.25.1 // indirect
	github.com/antlr4-go/antlr/v4 v4.13.1 // indirect
	go.yaml.in/yaml/v3 v3.0.4 // indirect
	golang.org/x/exp v0.0.0-20240823005443-9b4947da3948 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/protobuf v1.36.10 // indirect
)
