#!/usr/bin/env -S node --no-memory-reducer
// Thin launcher: the CLI is built into dist/ by `npm install` (the `prepare` script).
//
// --no-memory-reducer: once JavaScript goes quiet after a burst (WebSockets then flow in native
// code, with nothing for JavaScript to do), V8's memory reducer runs full GCs to shrink the heap:
// 10-25 ms of the main thread and a GC helper thread that forwarded traffic then waits behind on
// a small machine. A proxy keeps its heap instead (about 15 MB more after a burst of upgrades).
// Cluster workers inherit the flag (process.execArgv).
import '../dist/cli/main.js';
