//! `shared_protocol::decode` of Orders → Payments frames, on any bytes: it never
//! panics, and what it accepts encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared_protocol::{ClientMessage, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = decode::<ClientMessage>(text) {
        let again = decode::<ClientMessage>(&encode(&message)).expect("an encoded message decodes");
        assert_eq!(again, message);
    }
});
