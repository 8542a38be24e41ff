//go:build race

package natsbridge_test

func init() { raceEnabled = true }
