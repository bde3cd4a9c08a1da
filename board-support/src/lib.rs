//! Jetson/board detection, telemetry and execution-provider policy (issue: Jetson and GPU). Not implemented yet.
