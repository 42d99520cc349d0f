//! The shared secret Orders presents and Payments checks on the WebSocket handshake
//! (`Authorization: Bearer …`), and its development default.

/// The token both services fall back to when `PAYMENTS_TOKEN` is not set. It is public
/// (it is in this repository), so it is fine on a laptop and wrong anywhere else.
pub const DEFAULT_PAYMENTS_TOKEN: &str = "dev-token";

/// The warning to log when `token` is the public development token, whether it came from
/// the default or was set to that value explicitly (the service cannot tell, and the risk
/// is the same).
pub fn development_token_warning(token: &str) -> Option<String> {
    (token == DEFAULT_PAYMENTS_TOKEN).then(|| {
        format!(
            "PAYMENTS_TOKEN is the public development token {DEFAULT_PAYMENTS_TOKEN:?}: \
             anyone who can reach Payments can use the WebSocket; set PAYMENTS_TOKEN to a \
             secret outside development"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_token_is_named_as_such_whatever_set_it() {
        let warning = development_token_warning("dev-token").expect("a warning");
        assert!(warning.contains("is the public development token \"dev-token\""));
        assert!(!warning.contains("not set"), "{warning}");
    }

    #[test]
    fn any_other_token_gets_no_warning() {
        assert_eq!(development_token_warning("s3cr3t-from-vault"), None);
        assert_eq!(development_token_warning(""), None);
    }
}
