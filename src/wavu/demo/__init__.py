"""The demo ISP (`wavu seed-demo`, `wavu demo`): its data, the seed, the simulated clock and the
supervisor of the demo's processes. A Django app only to host its commands (no models); it sits on
top of every other app and nothing outside it imports it (see docs/architecture.md)."""
