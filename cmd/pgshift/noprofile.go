package main

// stopProfile ends the CPU profile a -tags profile build started (profile.go); a no-op otherwise.
var stopProfile = func() {}
