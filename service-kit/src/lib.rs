//! The plumbing Orders and Payments share, so each service keeps only what is its own:
//! the settings both read ([`config`]), logging set-up ([`telemetry`]), creating its database at start-up ([`database`]), migrations a rolling deploy can run ([`migrations`]),
//! batching concurrent HTTP writes into one commit ([`group_commit`]), HTTP metrics by route ([`http_metrics`]), the span of each request ([`http_span`]), the HTTP server's limits ([`http_server`]), GET routes that answer HEAD ([`routing`]), why a service did not start ([`startup`]), the WebSocket's shared secret ([`token`]), TLS from PEM files that reloads ([`tls`]), and
//! error chains for logs ([`error_chain`]).

pub mod config;
pub mod database;
mod durations;
pub mod group_commit;
pub mod http_metrics;
pub mod http_server;
pub mod http_span;
pub mod migrations;
mod open_error;
pub mod routing;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod trace_context;

/// An error and all its sources, `a: b: c`, for the log (never for a response).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not save")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(super::error_chain(&e), "could not save: disk full");
    }
}
