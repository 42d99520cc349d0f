//! Secrets and who may do what: the shared secret Orders presents and Payments checks on
//! the WebSocket handshake (`Authorization: Bearer …`), its development default, the
//! other bearer tokens (Orders' API, Payments' admin endpoints), and what
//! `APP_ENV=production` refuses: the development token, a missing required token, and
//! any token shorter than [`MIN_PRODUCTION_SECRET_BYTES`].
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

/// The shortest secret `APP_ENV=production` accepts: 32 bytes, as `openssl rand -hex 16`
/// prints (128 bits of entropy). A shorter token can be a word someone chose.
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// A token the service refuses to start with. `name` is its variable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{name} is the public development token {DEFAULT_PAYMENTS_TOKEN:?} and \
         APP_ENV is production: set {name} to a secret (the same one for Orders \
         and Payments)"
    )]
    DevelopmentTokenInProduction { name: &'static str },
    #[error("{name} is empty: set it to a secret")]
    Empty { name: &'static str },
    #[error(
        "{name} is {len} bytes long and APP_ENV is production: set it to a secret of at \
         least {MIN_PRODUCTION_SECRET_BYTES} bytes (`openssl rand -hex 32` makes one)"
    )]
    TooShort { name: &'static str, len: usize },
    #[error("{name} is required when APP_ENV is production: {why}")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name} and {other} are the same secret: give each its own")]
    Reused {
        name: &'static str,
        other: &'static str,
    },
}

/// Checks the Payments token for where the service runs: an error when it is empty, or
/// in production when it is the development token or shorter than
/// [`MIN_PRODUCTION_SECRET_BYTES`]; a warning (logged here) for the development token
/// anywhere else.
pub fn check_payments_token(env: AppEnv, token: &SecretString) -> Result<(), TokenError> {
    const NAME: &str = "PAYMENTS_TOKEN";
    if token.expose_secret().trim().is_empty() {
        return Err(TokenError::Empty { name: NAME });
    }
    match (env, development_token_warning(token.expose_secret())) {
        (AppEnv::Production, Some(_)) => {
            Err(TokenError::DevelopmentTokenInProduction { name: NAME })
        }
        (_, Some(warning)) => {
            tracing::warn!("{warning}");
            Ok(())
        }
        (_, None) => check_strength(env, NAME, token),
    }
}

/// Checks an optional secret (an API or admin token): never empty when set, and in
/// production at least [`MIN_PRODUCTION_SECRET_BYTES`]; when `required_in_production`
/// is `Some(why)`, production refuses to start without it and says `why`.
pub fn check_optional_token(
    env: AppEnv,
    name: &'static str,
    token: Option<&SecretString>,
    required_in_production: Option<&'static str>,
) -> Result<(), TokenError> {
    match (token, env, required_in_production) {
        (None, AppEnv::Production, Some(why)) => Err(TokenError::Missing { name, why }),
        (None, _, _) => Ok(()),
        (Some(token), _, _) if token.expose_secret().trim().is_empty() => {
            Err(TokenError::Empty { name })
        }
        (Some(token), env, _) => check_strength(env, name, token),
    }
}

/// Refuses `token` when it is the same secret as `other`'s: two tokens that guard
/// different doors must not open each other's.
pub fn check_distinct(
    (name, token): (&'static str, Option<&SecretString>),
    (other, other_token): (&'static str, &SecretString),
) -> Result<(), TokenError> {
    match token {
        Some(token)
            if bool::from(
                token
                    .expose_secret()
                    .as_bytes()
                    .ct_eq(other_token.expose_secret().as_bytes()),
            ) =>
        {
            Err(TokenError::Reused { name, other })
        }
        _ => Ok(()),
    }
}

/// In production, a secret must be long enough to be random.
fn check_strength(env: AppEnv, name: &'static str, token: &SecretString) -> Result<(), TokenError> {
    let len = token.expose_secret().len();
    if env == AppEnv::Production && len < MIN_PRODUCTION_SECRET_BYTES {
        return Err(TokenError::TooShort { name, len });
    }
    Ok(())
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
    fn production_refuses_the_development_token_and_takes_a_real_one() {
        let dev = SecretString::from(DEFAULT_PAYMENTS_TOKEN);
        let real = SecretString::from("s3cr3t-from-vault-0123456789abcdef");
        let refused = check_payments_token(AppEnv::Production, &dev).unwrap_err();
        assert!(refused.to_string().contains("APP_ENV is production"));
        assert!(check_payments_token(AppEnv::Production, &real).is_ok());
        assert!(check_payments_token(AppEnv::Development, &dev).is_ok());
        for env in [AppEnv::Development, AppEnv::Production] {
            let empty = check_payments_token(env, &SecretString::from(" ")).unwrap_err();
            assert!(matches!(empty, TokenError::Empty { .. }), "{empty}");
        }
    }

    #[test]
    fn production_refuses_a_short_secret_and_development_takes_it() {
        let short = SecretString::from("s3cr3t-from-vault");
        let long = SecretString::from("0123456789abcdef0123456789abcdef");
        let refused = check_payments_token(AppEnv::Production, &short).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "PAYMENTS_TOKEN is 17 bytes long and APP_ENV is production: set it to a \
             secret of at least 32 bytes (`openssl rand -hex 32` makes one)"
        );
        assert!(check_payments_token(AppEnv::Development, &short).is_ok());
        assert!(check_payments_token(AppEnv::Production, &long).is_ok());
        let api = |env, token: Option<&SecretString>| {
            check_optional_token(env, "ORDERS_API_TOKEN", token, Some("it guards the API"))
        };
        assert!(matches!(
            api(AppEnv::Production, Some(&short)),
            Err(TokenError::TooShort { len: 17, .. })
        ));
        assert!(api(AppEnv::Production, Some(&long)).is_ok());
        assert!(api(AppEnv::Development, Some(&short)).is_ok());
    }

    #[test]
    fn a_token_required_in_production_is_optional_elsewhere() {
        let required = |env| {
            check_optional_token(
                env,
                "ORDERS_API_TOKEN",
                None,
                Some("anyone could read orders"),
            )
        };
        assert_eq!(
            required(AppEnv::Production).unwrap_err().to_string(),
            "ORDERS_API_TOKEN is required when APP_ENV is production: anyone could read orders"
        );
        assert!(required(AppEnv::Development).is_ok());
        assert!(
            check_optional_token(AppEnv::Production, "PAYMENTS_ADMIN_TOKEN", None, None).is_ok()
        );
        let blank = SecretString::from("  ");
        assert!(matches!(
            check_optional_token(AppEnv::Development, "X", Some(&blank), None),
            Err(TokenError::Empty { name: "X" })
        ));
    }

    #[test]
    fn two_doors_do_not_share_a_secret() {
        let link = SecretString::from("the-link-token");
        let same = SecretString::from("the-link-token");
        let other = SecretString::from("the-admin-token");
        let reused = check_distinct(
            ("PAYMENTS_ADMIN_TOKEN", Some(&same)),
            ("PAYMENTS_TOKEN", &link),
        );
        assert_eq!(
            reused.unwrap_err().to_string(),
            "PAYMENTS_ADMIN_TOKEN and PAYMENTS_TOKEN are the same secret: give each its own"
        );
        assert!(
            check_distinct(
                ("PAYMENTS_ADMIN_TOKEN", Some(&other)),
                ("PAYMENTS_TOKEN", &link)
            )
            .is_ok()
        );
        assert!(check_distinct(("PAYMENTS_ADMIN_TOKEN", None), ("PAYMENTS_TOKEN", &link)).is_ok());
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
