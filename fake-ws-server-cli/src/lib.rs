//! fake-ws-server as a standalone process: the fake serves WebSocket clients on one
//! port, and an admin HTTP API on another lets a test in any language drive it (what
//! the Rust API does in-process). `scenario` is the file it starts from, `admin` the
//! API, `openapi` its document, `run` the process.

pub mod admin;
pub mod openapi;
pub mod run;
pub mod scenario;
