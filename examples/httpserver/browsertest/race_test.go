//go:build race

package browsertest

// raceEnabled reports whether the test binary was built with -race; the
// example server is then built with it too.
const raceEnabled = true
