//! Ids and money: newtypes parsed once at the edge, so nothing inside re-validates them.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value could not become one of this module's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("not a UUID: {0:?}")]
    NotAUuid(String),
    #[error("amount must be a positive integer of minor units, got {0}")]
    NonPositiveAmount(i64),
    #[error(
        "currency must be the upper-case code of a current ISO 4217 currency with minor \
         units (such as \"EUR\"), got {0:?}"
    )]
    BadCurrency(String),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the text form of a UUID.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| IdError::NotAUuid(s.to_owned()))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            /// The hyphenated lower-case form the protocol uses.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// An order's id, chosen by Orders.
    OrderId
);
uuid_id!(
    /// A payment session's id, chosen by Payments.
    PaymentId
);

/// The id of a `payment_state` event: an integer that increases with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An amount of money in the currency's minor unit (cents), always positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor: i64) -> Result<Self, IdError> {
        if minor > 0 {
            Ok(Self(minor))
        } else {
            Err(IdError::NonPositiveAmount(minor))
        }
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = IdError;
    fn try_from(minor: i64) -> Result<Self, IdError> {
        Self::new(minor)
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> i64 {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 4217 currency code, such as `EUR`: the code of a current currency with
/// minor units (amounts are integers of them). Funds (`BOV`, `USN`…), precious metals
/// and special codes (`XAU`, `XDR`, `XTS`, `XXX`…) and superseded currencies are not
/// currencies a shop charges in, and are refused. The table is the `iso_currency`
/// crate's.
///
/// Parsing is strict (`"eur"` is refused); callers that accept lower case from people,
/// such as the Orders HTTP API, upper-case it first with [`Currency::parse_lenient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses the upper-case code of a currency a shop can charge in (see [`Currency`]).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let chargeable = iso_currency::Currency::from_code(s).is_some_and(|c| {
            c.exponent().is_some() && !c.is_fund() && !c.is_special() && c.is_superseded().is_none()
        });
        match s.as_bytes() {
            &[a, b, c] if chargeable => Ok(Self([a, b, c])),
            _ => Err(IdError::BadCurrency(s.to_owned())),
        }
    }

    /// Reads a currency a store wrote: any three upper-case letters, as every earlier
    /// version took them, so that rows written before the ISO 4217 check keep being
    /// read (and an order's session keeps matching it); everything new goes through
    /// [`Currency::parse`].
    pub fn from_stored(s: &str) -> Result<Self, IdError> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(IdError::BadCurrency(s.to_owned())),
        }
    }

    /// Every currency [`Currency::parse`] takes, in code order.
    pub fn all() -> &'static [Currency] {
        static ALL: std::sync::LazyLock<Vec<Currency>> = std::sync::LazyLock::new(|| {
            let letters = b'A'..=b'Z';
            letters
                .clone()
                .flat_map(|a| letters.clone().map(move |b| [a, b]))
                .flat_map(|[a, b]| (b'A'..=b'Z').map(move |c| [a, b, c]))
                .filter_map(|code| Currency::parse(std::str::from_utf8(&code).ok()?).ok())
                .collect()
        });
        &ALL
    }

    /// Parses three ASCII letters in any case, storing them upper case.
    pub fn parse_lenient(s: &str) -> Result<Self, IdError> {
        Self::parse(&s.to_ascii_uppercase()).map_err(|_| IdError::BadCurrency(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).expect("currency is ASCII")
    }
}

impl TryFrom<String> for Currency {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_the_code_of_a_chargeable_iso_4217_currency() {
        for good in ["EUR", "USD", "JPY", "KWD", "CHF", "GBP"] {
            assert_eq!(Currency::parse(good).unwrap().as_str(), good);
        }
        // Not a code; lower case; funds, metals, special and superseded codes.
        for bad in [
            "ABC", "ZZZ", "eur", "EU", "EURO", "E1R", "", "ÉUR", "XAU", "XDR", "XTS", "XXX", "BOV",
            "USN", "DEM", "HRK",
        ] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Currency::from_stored("ABC").unwrap().as_str(), "ABC");
        assert!(Currency::from_stored("abc").is_err());
        let all = Currency::all();
        assert!((140..=180).contains(&all.len()), "{} currencies", all.len());
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Currency::parse_lenient("usd").unwrap().as_str(), "USD");
        assert!(Currency::parse_lenient("us").is_err());
    }

    #[test]
    fn amount_is_positive() {
        assert_eq!(Amount::new(1).unwrap().minor(), 1);
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(-5).is_err());
    }

    #[test]
    fn ids_print_hyphenated_lower_case() {
        let id = OrderId::parse("7D3C1E2A-0000-4000-8000-00000000ABCD").unwrap();
        assert_eq!(id.to_string(), "7d3c1e2a-0000-4000-8000-00000000abcd");
        assert!(OrderId::parse("not-a-uuid").is_err());
    }
}
