//! Test tooling for the workspace.

pub mod postgres;
