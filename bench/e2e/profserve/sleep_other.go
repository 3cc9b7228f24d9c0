//go:build !linux

package main

import "time"

// sleep is time.Sleep where there is no per-thread timer slack.
func sleep(dur time.Duration) { time.Sleep(dur) }
