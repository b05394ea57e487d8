//! Close-handshake rules. The server always answers a client's close, and never puts on the
//! wire a code that RFC 6455 reserves for local use (1005, 1006, 1015) or a reason longer
//! than the 123 bytes a close frame has room for.

pub const NORMAL: u16 = 1000;
/// Policy violation: used when a client keeps flooding after being told to slow down.
pub const POLICY_VIOLATION: u16 = 1008;
/// Removed by a moderator.
pub const KICKED: u16 = 4000;
/// The socket's ticket is missing, bad or expired: reconnect only with a fresh one.
pub const UNAUTHORIZED: u16 = 4401;
/// This ticket may not use this room, or its holder is banned: do not reconnect with it.
pub const FORBIDDEN: u16 = 4403;
/// Too many joins, connections or requests from this client: do not reconnect at once (HTTP
/// 429's number).
pub const TRY_LATER: u16 = 4429;

pub const MAX_REASON_BYTES: usize = 123;

/// The code to answer a client's close with: its own code when that may be sent, else 1000.
pub fn reply_code(received: u16) -> u16 {
    if sendable(received) {
        received
    } else {
        NORMAL
    }
}

/// Codes an endpoint may put in a close frame: 1000-1003, 1007-1014 and 3000-4999.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Cuts a reason to at most 123 bytes without splitting a character.
pub fn reply_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_invalid_codes_become_normal() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert_eq!(reply_code(code), NORMAL, "{code}");
        }
        for code in [1000, 1001, 1003, 1008, 1011, 1014, 3000, 4999] {
            assert_eq!(reply_code(code), code);
        }
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        assert_eq!(reply_reason("bye"), "bye");
        let long = "é".repeat(100);
        let cut = reply_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert_eq!(cut.len(), 122, "cut at a character boundary");
        assert_eq!(reply_reason(&"a".repeat(200)).len(), 123);
    }
}
