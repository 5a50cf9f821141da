// celeval compiles CEL expressions and evaluates them against requests shaped as Envoy's
// attributes (request.headers, a map of header names to values), with cel-go's default parser
// limits, which are cel-cpp's (Envoy's) too: 100,000 codepoints and nesting depth 250.
//
// The proxy's own node is the variable node, as Istio's stats filter exposes it (node.metadata
// being the node metadata Struct, a map here); a request without one gets {"metadata": {}}.
//
// Input on stdin: {"expressions": ["..."], "requests": [{"headers": {"name": "value"}, "node": {...}}]}.
// Output: {"compiled": [{"ok": bool, "error": "..."}], "results": [[{"value": "...", "error": "..."}]]},
// results[r][e] being expression e on request r.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"cel.dev/cel-go/cel"
)

type request struct {
	Headers map[string]string `json:"headers"`
	Node    map[string]any    `json:"node"`
}

type input struct {
	Expressions []string  `json:"expressions"`
	Requests    []request `json:"requests"`
}

type compiled struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type result struct {
	Value *string `json:"value,omitempty"`
	Error string  `json:"error,omitempty"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "celeval: stdin is not the expected JSON: %v\n", err)
		os.Exit(2)
	}
	// Envoy's request attributes: request.headers is a string map; the rest of request is untyped here.
	env, err := cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("node", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "celeval: %v\n", err)
		os.Exit(2)
	}
	programs := make([]cel.Program, len(in.Expressions))
	out := struct {
		Compiled []compiled `json:"compiled"`
		Results  [][]result `json:"results"`
	}{Compiled: []compiled{}, Results: [][]result{}}
	for i, expression := range in.Expressions {
		ast, issues := env.Compile(expression)
		if issues != nil && issues.Err() != nil {
			out.Compiled = append(out.Compiled, compiled{Error: issues.Err().Error()})
			continue
		}
		program, err := env.Program(ast)
		if err != nil {
			out.Compiled = append(out.Compiled, compiled{Error: err.Error()})
			continue
		}
		programs[i] = program
		out.Compiled = append(out.Compiled, compiled{OK: true})
	}
	for _, r := range in.Requests {
		headers := map[string]any{}
		for k, v := range r.Headers {
			headers[k] = v
		}
		node := r.Node
		if node == nil {
			node = map[string]any{"metadata": map[string]any{}}
		}
		row := []result{}
		for _, program := range programs {
			if program == nil {
				row = append(row, result{Error: "not compiled"})
				continue
			}
			value, _, err := program.Eval(map[string]any{"request": map[string]any{"headers": headers}, "node": node})
			if err != nil {
				row = append(row, result{Error: err.Error()})
				continue
			}
			text := fmt.Sprint(value.Value())
			row = append(row, result{Value: &text})
		}
		out.Results = append(out.Results, row)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
