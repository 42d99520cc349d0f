//! The body of `POST /orders`, on any bytes: the JSON object parser, then the field
//! validation. Never panics; what it accepts is within the API's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders::domain::{MAX_AMOUNT, MAX_DESCRIPTION_CHARS, NewOrder};
use orders::routes::body::{MAX_BODY_BYTES, parse_object};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY_BYTES {
        return; // refused before parsing, by length
    }
    let Ok(object) = parse_object(data) else {
        return;
    };
    if let Ok(order) = NewOrder::parse(&object) {
        assert!((1..=MAX_AMOUNT).contains(&order.amount.minor()));
        assert_eq!(order.currency.as_str().len(), 3);
        assert!(
            order
                .description
                .as_ref()
                .is_none_or(|d| d.chars().count() <= MAX_DESCRIPTION_CHARS)
        );
    }
});
