//! Raw HTTP/1.1 requests, written byte for byte on a TCP socket: for tests of what an
//! HTTP client library would not send as written (percent-encoded or doubled slashes,
//! dot segments, made-up methods, a body trickled a byte at a time).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`request`] waits for the whole answer before it fails the test.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// The answer to a raw request.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The head, status line and headers, as text.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Sends `method target` to `address` (`host:port`, or `http://host:port`) with
/// `headers` (`"Name: value"` each) and `body`, with `Connection: close` unless
/// `headers` has a `Connection` of its own (which should then include `close`), and
/// reads the whole answer. Panics, naming the request, if there is none within
/// [`ANSWER_DEADLINE`].
pub async fn request(
    address: &str,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> RawResponse {
    let host = address.trim_start_matches("http://");
    let what = format!("{method} {target}");
    let exchange = async {
        let mut socket = TcpStream::connect(host).await?;
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        let has_connection = headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("connection:"));
        if !has_connection {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(body.as_bytes()).await?;
        read_answer(&mut socket).await
    };
    let answer = match tokio::time::timeout(ANSWER_DEADLINE, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {ANSWER_DEADLINE:?}"),
    };
    parse(&answer).unwrap_or_else(|| {
        panic!(
            "{what}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

/// Ways to write `path` (which starts with `/`) that a server might route to the same
/// place, for tests that a check on the route cannot be passed by: each letter
/// percent-encoded, everything encoded, slashes encoded or doubled, dot segments, a
/// trailing slash, a parameter, a query, another case.
pub fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    // each letter percent-encoded, in upper- and lower-case hex
    for (i, c) in path.char_indices() {
        if c.is_ascii_alphanumeric() {
            for hex in [format!("%{:02X}", c as u8), format!("%{:02x}", c as u8)] {
                out.push(format!("{}{hex}{}", &path[..i], &path[i + 1..]));
            }
        }
    }
    // every byte encoded but the leading slash (a request target must start with one,
    // or the server refuses it with 400 before routing)
    out.push(format!(
        "/{}",
        path[1..]
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    ));
    // slashes encoded, doubled; a trailing slash; dot segments; parameters; case
    for (i, _) in path.char_indices().filter(|(_, c)| *c == '/') {
        if i > 0 {
            out.push(format!("{}%2F{}", &path[..i], &path[i + 1..]));
            out.push(format!("{}%2f{}", &path[..i], &path[i + 1..]));
        }
        out.push(format!("{}/{}", &path[..i], &path[i..]));
        out.push(format!("{}/./{}", &path[..i], &path[i + 1..]));
        out.push(format!("{}/x/../{}", &path[..i], &path[i + 1..]));
    }
    out.push(format!("{path}/"));
    out.push(format!("{path};x=1"));
    out.push(format!("{path}?limit=5"));
    out.push(path.to_uppercase());
    out.push(path.replacen("orders", "Orders", 1));
    out
}

/// A made-up method and path, different each call: a token of 1 to 96 capital letters
/// (or one of the real methods, one time in four) and 1 to 4 random segments, some of
/// them percent-encoded. For tests that no request can grow what a service keeps per
/// method or path, such as metric series.
pub fn made_up_request() -> (String, String) {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    let method = if bytes[0].is_multiple_of(4) {
        ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"][usize::from(bytes[1]) % 6].to_owned()
    } else {
        let len = 1 + usize::from(bytes[2]) % 96;
        (0..len)
            .map(|i| char::from(b'A' + more[i % 16].wrapping_add(i as u8) % 26))
            .collect()
    };
    let segments = 1 + usize::from(bytes[3]) % 4;
    let path: String = (0..segments)
        .map(|i| {
            let b = bytes[4 + i * 2];
            match b % 3 {
                0 => format!("/%{:02X}{:02x}", b, bytes[5 + i * 2]),
                _ => format!("/{:02x}{:02x}", b, bytes[5 + i * 2]),
            }
        })
        .collect();
    (method, path)
}

/// Reads one answer: to the end of its body by `Content-Length` (a server may keep the
/// connection a while after refusing an upgrade), else to the end of the stream.
async fn read_answer(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_done = answer.windows(4).any(|w| w == b"\r\n\r\n");
        if head_done
            && let Some(parsed) = parse(&answer)
            && let Some(length) = parsed.header("content-length")
            && let Ok(length) = length.parse::<usize>()
            && parsed.body.len() >= length
        {
            return Ok(answer);
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(answer);
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

fn parse(answer: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_is_parsed_into_status_headers_and_body() {
        let answer =
            super::parse(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\r\n{}")
                .unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert_eq!(answer.header("retry-after"), None);
        assert_eq!(answer.body, "{}");
        assert!(super::parse(b"garbage").is_none());
    }
}
