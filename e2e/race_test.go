//go:build race

package e2e

// raceBuild: under "go test -race" the fulcrum binary is built with the race
// detector too, so the suite checks the whole binary for data races.
const raceBuild = true
