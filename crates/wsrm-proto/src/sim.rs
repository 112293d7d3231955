//! Deterministic network simulator (see `run`).
