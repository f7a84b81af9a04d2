module github.com/squibvm/squib

go 1.24

require (
	github.com/ebitengine/purego v0.10.2
	github.com/fxamacker/cbor/v2 v2.10.0
	golang.org/x/sys v0.33.0
)

require github.com/x448/float16 v0.8.4 // indirect
