//! Secrets and who may do what: the shared secret Orders presents and Payments checks on
//! the WebSocket handshake (`Authorization: Bearer …`), its development default, and the
//! `APP_ENV=production` rule that refuses that default.
//!
//! Secrets are [`SecretString`]s (secrecy) in every config struct, so `{:?}` prints
//! `[REDACTED]`, and bearer tokens are compared in constant time (subtle).

pub use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// The token both services fall back to when `PAYMENTS_TOKEN` is not set. It is public
/// (it is in this repository), so it is fine on a laptop and wrong anywhere else.
pub const DEFAULT_PAYMENTS_TOKEN: &str = "dev-token";

/// Where the service runs (`APP_ENV`): production refuses the public development token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AppEnv {
    #[default]
    Development,
    Production,
}

/// A Payments token the service refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "PAYMENTS_TOKEN is the public development token {DEFAULT_PAYMENTS_TOKEN:?} and \
         APP_ENV is production: set PAYMENTS_TOKEN to a secret (the same one for Orders \
         and Payments)"
    )]
    DevelopmentTokenInProduction,
    #[error("PAYMENTS_TOKEN is empty: set it to a secret (the same one for Orders and Payments)")]
    Empty,
}

/// Checks the Payments token for where the service runs: an error when it is empty, or
/// when it is the development token in production; a warning (logged here) for the
/// development token anywhere else.
pub fn check_payments_token(env: AppEnv, token: &SecretString) -> Result<(), TokenError> {
    if token.expose_secret().trim().is_empty() {
        return Err(TokenError::Empty);
    }
    match (env, development_token_warning(token.expose_secret())) {
        (AppEnv::Production, Some(_)) => Err(TokenError::DevelopmentTokenInProduction),
        (_, Some(warning)) => {
            tracing::warn!("{warning}");
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// The warning to log when `token` is the public development token, whether it came from
/// the default or was set to that value explicitly (the service cannot tell, and the risk
/// is the same).
pub fn development_token_warning(token: &str) -> Option<String> {
    (token == DEFAULT_PAYMENTS_TOKEN).then(|| {
        format!(
            "PAYMENTS_TOKEN is the public development token {DEFAULT_PAYMENTS_TOKEN:?}: \
             anyone who can reach Payments can use the WebSocket; set PAYMENTS_TOKEN to a \
             secret outside development (APP_ENV=production refuses it)"
        )
    })
}

/// Whether an `Authorization` header value is `Bearer <token>`, compared in constant
/// time (for tokens of the same length; the length itself is not a secret worth hiding).
pub fn bearer_matches(authorization: Option<&[u8]>, token: &SecretString) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let value = value.trim_ascii();
    let Some(presented) = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
    else {
        return false;
    };
    presented
        .trim_ascii()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
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

    #[test]
    fn production_refuses_the_development_token_and_nothing_else() {
        let dev = SecretString::from(DEFAULT_PAYMENTS_TOKEN);
        let real = SecretString::from("s3cr3t-from-vault");
        let refused = check_payments_token(AppEnv::Production, &dev).unwrap_err();
        assert!(refused.to_string().contains("APP_ENV is production"));
        assert!(check_payments_token(AppEnv::Production, &real).is_ok());
        assert!(check_payments_token(AppEnv::Development, &dev).is_ok());
        for env in [AppEnv::Development, AppEnv::Production] {
            let empty = check_payments_token(env, &SecretString::from(" ")).unwrap_err();
            assert!(matches!(empty, TokenError::Empty), "{empty}");
        }
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let token = SecretString::from("s3cr3t");
        assert!(bearer_matches(Some(b"Bearer s3cr3t"), &token));
        assert!(bearer_matches(Some(b" Bearer s3cr3t "), &token));
        for wrong in [
            &b"Bearer s3cr3"[..],
            b"Bearer s3cr3tt",
            b"Bearer ",
            b"s3cr3t",
            b"Basic s3cr3t",
            b"",
        ] {
            assert!(!bearer_matches(Some(wrong), &token), "{wrong:?}");
        }
        assert!(!bearer_matches(None, &token));
    }
}
