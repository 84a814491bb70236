// Package e2e holds Fulcrum's end-to-end tests: they build the real fulcrum
// binary once, run it against real servers started by the tests on the
// loopback interface, and drive it with real clients (curl, python3
// websockets, raw TCP).
//
// Run with:
//
//	go test ./e2e/ -count=1                       # normal run, 256 MiB transfers
//	go test ./e2e/ -count=1 -short                # 32 MiB transfers
//	FULCRUM_E2E_LARGE=1 go test ./e2e/ -count=1   # 2 GiB transfers
package e2e
