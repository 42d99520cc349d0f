//! What the client wrote, as it was on the wire: [`ClientFrames`] follows the bytes
//! the fake reads, under tungstenite, and keeps the client's first close frame
//! ([`WireClose`]) whole.
//!
//! tungstenite does not hand on a close frame as it came: a code RFC 6455 forbids on
//! the wire (1005, 1006, 1015, ...) comes out as 1002 "Protocol violation", its
//! substitute, and a close frame it cannot parse (a 1-byte payload, a reason that is not
//! UTF-8) as an error with no frame at all. The fake records the client's close from
//! these bytes instead, and says what RFC 6455 forbids in it ([`WireClose::problems`]).
//!
//! Memory is bounded: a frame header (at most 14 bytes) and a close payload's first
//! 125 bytes (all a valid control frame may carry); other payloads are skipped.

/// The opcode of a close frame (RFC 6455, 5.5.1).
const CLOSE: u8 = 0x8;

/// The most a control frame may carry (RFC 6455, 5.5), and the most of a close
/// payload kept.
const MAX_CONTROL: usize = 125;

/// How long a frame header is, given its first bytes (at least 2 once known).
pub(super) fn header_len(header: &[u8]) -> usize {
    if header.len() < 2 {
        return 2;
    }
    let extended = match header[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if header[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete header announces.
pub(super) fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        short => u64::from(short),
    }
}

/// The masking key of a complete header, if the frame is masked.
fn mask_of(header: &[u8]) -> Option<[u8; 4]> {
    if header[1] & 0x80 == 0 {
        return None;
    }
    let at = header.len() - 4;
    Some([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// A close frame from the client, as it was on the wire (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WireClose {
    /// Its FIN bit: a close frame must not be fragmented.
    pub(super) fin: bool,
    /// The payload's length, as the header announced it.
    pub(super) len: u64,
    /// The payload, unmasked: its first 125 bytes at most.
    pub(super) payload: Vec<u8>,
}

impl WireClose {
    /// A close frame with this code and reason, as tungstenite would have read it:
    /// for when the stream saw none (it always does; this is the fallback).
    pub(super) fn from_parts(code: Option<u16>, reason: &str) -> Self {
        let mut payload = Vec::new();
        if let Some(code) = code {
            payload.extend(code.to_be_bytes());
            payload.extend(reason.as_bytes());
        }
        WireClose {
            fin: true,
            len: payload.len() as u64,
            payload,
        }
    }

    /// The code it carries: `None` for an empty payload (what RFC 6455 reports as 1005,
    /// "no status") or a 1-byte one (too short for a code).
    pub(super) fn code(&self) -> Option<u16> {
        match self.payload.as_slice() {
            [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
            _ => None,
        }
    }

    /// Its reason (lossy if it is not UTF-8), empty when there is none.
    pub(super) fn reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }

    /// What RFC 6455 forbids in it, if anything: a forbidden code, a 1-byte payload, a
    /// reason that is not UTF-8, more than 125 bytes, or fragmentation. An empty payload
    /// is allowed: it is a close without a code.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.len == 1 {
            problems.push(
                "a close payload of 1 byte: a close frame carries nothing, or a 2-byte code \
                 and a reason (RFC 6455, 5.5.1)"
                    .to_owned(),
            );
        }
        if let Some(problem) = self.code().and_then(close_code_problem) {
            problems.push(problem);
        }
        if self.len > MAX_CONTROL as u64 {
            problems.push(format!(
                "a close frame of {} bytes: a control frame carries at most 125 (RFC 6455, 5.5)",
                self.len
            ));
        } else if self.payload.len() > 2 && std::str::from_utf8(&self.payload[2..]).is_err() {
            problems.push("a close reason that is not UTF-8 (RFC 6455, 5.5.1)".to_owned());
        }
        if !self.fin {
            problems.push(
                "a fragmented close frame: control frames must not be fragmented (RFC 6455, 5.5)"
                    .to_owned(),
            );
        }
        problems
    }
}

/// Why a close code must not be sent in a close frame, or `None` if it may: RFC 6455,
/// 7.4.1 and 7.4.2, with the IANA registry's later codes (1012 to 1014) allowed.
/// Allowed: 1000 to 1003, 1007 to 1014, 3000 to 4999.
pub(super) fn close_code_problem(code: u16) -> Option<String> {
    let why = match code {
        0..=999 => "codes below 1000 are not used",
        1004 => "1004 is reserved, with no meaning",
        1005 => {
            "1005 (no status) only stands for a close frame without a code; it must not be \
             sent"
        }
        1006 => {
            "1006 (abnormal closure) only stands for a connection that ended without a close \
             frame; it must not be sent"
        }
        1015 => {
            "1015 (TLS handshake failure) only stands for a failed TLS handshake; it must not \
             be sent"
        }
        1016..=2999 => "codes 1016 to 2999 are reserved for the protocol, and none is defined",
        5000.. => "codes above 4999 are not defined",
        _ => return None,
    };
    Some(format!(
        "forbidden close code {code}: {why} (RFC 6455, 7.4)"
    ))
}

/// Follows the bytes a client writes to the fake (see the module's docs): the upgrade
/// request, then frame after frame; keeps its first close frame until taken.
#[derive(Debug, Default)]
pub(super) struct ClientFrames {
    /// How much of the upgrade request's end (`\r\n\r\n`) was seen; 4 once past it.
    request_end: usize,
    /// The header of the current frame, while it is incomplete.
    header: Vec<u8>,
    /// Payload bytes of the current frame not yet read.
    remaining: u64,
    /// The current frame's masking key.
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame read so far.
    read: u64,
    /// The current frame, if it is a close frame.
    close: Option<WireClose>,
    /// The client's first close frame, once complete, until taken.
    done: Option<WireClose>,
    /// A close frame was complete: later ones are not kept.
    closed: bool,
}

impl ClientFrames {
    /// Follows `bytes`, the next the client wrote.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = if self.request_end < 4 {
                self.skip_request(bytes)
            } else if self.remaining > 0 {
                self.payload(bytes)
            } else {
                self.header(bytes)
            };
        }
    }

    /// The client's first close frame, once it came whole; only once.
    pub(super) fn take_close(&mut self) -> Option<WireClose> {
        self.done.take()
    }

    /// Skips the upgrade request, up to the blank line that ends it.
    fn skip_request<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        for (i, &byte) in bytes.iter().enumerate() {
            self.request_end = if byte == b"\r\n\r\n"[self.request_end] {
                self.request_end + 1
            } else {
                usize::from(byte == b'\r')
            };
            if self.request_end == 4 {
                return &bytes[i + 1..];
            }
        }
        &[]
    }

    /// Takes in a frame's header; once whole, starts its payload.
    fn header<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let mut used = 0;
        while used < bytes.len() && self.header.len() < header_len(&self.header) {
            self.header.push(bytes[used]);
            used += 1;
        }
        if self.header.len() == header_len(&self.header) {
            let header = std::mem::take(&mut self.header);
            self.remaining = payload_len(&header);
            self.mask = mask_of(&header);
            self.read = 0;
            self.close = (header[0] & 0x0f == CLOSE).then(|| WireClose {
                fin: header[0] & 0x80 != 0,
                len: self.remaining,
                payload: Vec::new(),
            });
            if self.remaining == 0 {
                self.end_frame();
            }
        }
        &bytes[used..]
    }

    /// Takes in payload bytes of the current frame: kept (unmasked) for a close frame.
    fn payload<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let n = bytes
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if let Some(close) = &mut self.close {
            for &byte in &bytes[..n] {
                if close.payload.len() < MAX_CONTROL {
                    let key = self.mask.map_or(0, |mask| mask[(self.read % 4) as usize]);
                    close.payload.push(byte ^ key);
                }
                self.read += 1;
            }
        }
        self.remaining -= n as u64;
        if self.remaining == 0 {
            self.end_frame();
        }
        &bytes[n..]
    }

    /// The current frame is complete: keeps it if it is the first close frame.
    fn end_frame(&mut self) {
        if let Some(close) = self.close.take()
            && !self.closed
        {
            self.closed = true;
            self.done = Some(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut bytes = vec![first];
        match payload.len() {
            len @ 0..=125 => bytes.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend((len as u16).to_be_bytes());
            }
            len => {
                bytes.push(0x80 | 127);
                bytes.extend((len as u64).to_be_bytes());
            }
        }
        bytes.extend(mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        bytes
    }

    fn close(payload: &[u8]) -> Vec<u8> {
        frame(0x88, payload)
    }

    /// What `ClientFrames` keeps of `bytes`, fed whole and one byte at a time (the two
    /// must agree).
    fn closes(bytes: &[u8]) -> Option<WireClose> {
        let mut whole = ClientFrames::default();
        whole.feed(bytes);
        let mut bytewise = ClientFrames::default();
        for byte in bytes {
            bytewise.feed(std::slice::from_ref(byte));
        }
        let close = whole.take_close();
        assert_eq!(close, bytewise.take_close());
        close
    }

    #[test]
    fn a_close_after_the_request_and_other_frames_is_kept_unmasked() {
        let mut bytes = REQUEST.to_vec();
        bytes.extend(frame(0x81, b"hello"));
        bytes.extend(frame(0x82, &vec![7; 300]));
        bytes.extend(frame(0x82, &vec![7; 70_000]));
        bytes.extend(close(b"\x03\xeegone"));
        let close = closes(&bytes).expect("a close frame");
        assert_eq!(close.code(), Some(1006));
        assert_eq!(close.reason(), "gone");
        assert!(close.problems()[0].contains("forbidden close code 1006"));
    }

    #[test]
    fn a_close_inside_the_request_or_payload_bytes_is_not_a_close() {
        // The request's own bytes, and a binary payload that looks like a close frame.
        let mut bytes = b"GET / HTTP/1.1\r\nX: \x88\x82\r\n\r\n".to_vec();
        bytes.extend(frame(0x82, &close(b"\x03\xe8")));
        assert_eq!(closes(&bytes), None);
    }

    #[test]
    fn only_the_first_close_is_kept_and_only_once() {
        let mut frames = ClientFrames::default();
        let mut bytes = REQUEST.to_vec();
        bytes.extend(close(b"\x0f\xa0"));
        bytes.extend(close(b"\x03\xe8"));
        frames.feed(&bytes);
        assert_eq!(frames.take_close().and_then(|c| c.code()), Some(4000));
        assert_eq!(frames.take_close(), None);
    }

    #[test]
    fn an_empty_close_is_allowed_and_a_one_byte_close_is_not() {
        let empty = closes(&[REQUEST, &close(b"")].concat()).unwrap();
        assert_eq!(
            (empty.code(), empty.problems()),
            (None, Vec::<String>::new())
        );
        let one = closes(&[REQUEST, &close(b"\x03")].concat()).unwrap();
        assert_eq!(one.code(), None);
        assert!(one.problems()[0].contains("1 byte"), "{:?}", one.problems());
    }

    #[test]
    fn oversized_fragmented_and_non_utf8_closes_are_flagged() {
        let big = closes(&[REQUEST, &close(&[b"\x03\xe8", &[b'x'; 200][..]].concat())].concat());
        let big = big.unwrap();
        assert_eq!((big.len, big.payload.len()), (202, 125));
        assert!(
            big.problems()[0].contains("202 bytes"),
            "{:?}",
            big.problems()
        );
        let fragment = closes(&[REQUEST, &frame(0x08, b"\x03\xe8")].concat()).unwrap();
        assert!(fragment.problems()[0].contains("fragmented"));
        let latin = closes(&[REQUEST, &close(b"\x03\xe8caf\xe9")].concat()).unwrap();
        assert!(latin.problems()[0].contains("not UTF-8"));
        assert_eq!(latin.reason(), "caf\u{fffd}");
    }

    #[test]
    fn close_codes_follow_rfc_6455() {
        let allowed = [
            1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4000, 4999,
        ];
        for code in allowed {
            assert_eq!(close_code_problem(code), None, "{code}");
        }
        let forbidden = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX];
        for code in forbidden {
            assert!(close_code_problem(code).is_some(), "{code}");
        }
    }
}
