//! Nothing but tests: see `tests/` and this project's Cargo.toml.
