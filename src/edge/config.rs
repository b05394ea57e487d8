//! The Worker's vars, read into typed settings. A var that is set but unreadable is an
//! operator's mistake: it is reported and the default is used, so a typo cannot take the
//! chat down.

use crate::chat::idle::DEFAULT_IDLE_TIMEOUT_MS;
use crate::chat::messages::DEFAULT_EDIT_WINDOW_S;
use crate::chat::rate_limit::RateLimit;
use crate::chat::sse;

pub const DEFAULT_MAX_ROOM_SOCKETS: usize = 1_000;

/// The runtime accepts at most this many hibernatable sockets per Durable Object, and a
/// refused accept would abort the whole isolate, so `MAX_ROOM_SOCKETS` cannot go higher.
pub const RUNTIME_MAX_SOCKETS: usize = 32_768;

const DAY_MS: u64 = 86_400_000;
/// `ROOM_TTL_DAYS` from one second up to about 10,000 years.
const TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=3_650_000 * DAY_MS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLimits {
    /// Frames per socket.
    pub rate: RateLimit,
    /// Frames per client (all the sockets from one address), surviving its reconnects.
    pub client: RateLimit,
    /// Messages per room, from everyone together: a burst of one second's worth.
    pub room: RateLimit,
    /// Joins per client per room in any 10 s.
    pub client_joins: u32,
    /// Sockets one client may hold in a room at once.
    pub max_client_sockets: u32,
    pub max_sockets: usize,
    /// How long after posting its author may edit a message (`EDIT_WINDOW_S`).
    pub edit_window_ms: u64,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            rate: RateLimit::DEFAULT,
            client: RateLimit { burst: 60, per_second: 15 },
            room: RateLimit { burst: 50, per_second: 50 },
            client_joins: 10,
            max_client_sockets: 20,
            max_sockets: DEFAULT_MAX_ROOM_SOCKETS,
            edit_window_ms: DEFAULT_EDIT_WINDOW_S * 1000,
        }
    }
}

/// Everything a room's object reads from the vars.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    pub limits: RoomLimits,
    /// A room with no socket and no message for this long deletes its storage.
    pub idle_ttl_ms: u64,
    /// Whether answers carry `x-room-instance`, which shows when a room was rebuilt.
    pub instance_header: bool,
    /// A socket silent for this long is closed as idle (`IDLE_TIMEOUT_S`).
    pub idle_timeout_ms: u64,
    /// Open event streams per room (`MAX_ROOM_STREAMS`).
    pub max_streams: u32,
    /// How often an open event stream gets a comment line (`SSE_KEEPALIVE_MS`).
    pub keepalive_ms: u32,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            limits: RoomLimits::default(),
            idle_ttl_ms: 30 * DAY_MS,
            instance_header: false,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_streams: sse::DEFAULT_MAX_ROOM_STREAMS,
            keepalive_ms: sse::DEFAULT_KEEPALIVE_MS,
        }
    }
}

/// A var that could not be read, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVar {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl RoomConfig {
    /// Reads the rate limits, `MAX_ROOM_SOCKETS`, `MAX_ROOM_STREAMS`, `SSE_KEEPALIVE_MS`, `ROOM_TTL_DAYS`,
    /// `IDLE_TIMEOUT_S` and `ROOM_INSTANCE_HEADER`
    /// through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> (RoomConfig, Vec<BadVar>) {
        let mut config = RoomConfig::default();
        let mut bad = Vec::new();
        let mut whole = |name: &'static str, slot: &mut u32| {
            if let Some(value) = var(name) {
                match value.trim().parse::<u32>() {
                    Ok(n) if n > 0 => *slot = n,
                    _ => bad.push(BadVar { name, value, why: "not a whole number above 0; using the default" }),
                }
            }
        };
        let limits = &mut config.limits;
        let mut edit_window_s = u32::try_from(DEFAULT_EDIT_WINDOW_S).unwrap_or(u32::MAX);
        whole("EDIT_WINDOW_S", &mut edit_window_s);
        limits.edit_window_ms = u64::from(edit_window_s) * 1000;
        let mut max_sockets = u32::try_from(limits.max_sockets).unwrap_or(u32::MAX);
        whole("RATE_BURST", &mut limits.rate.burst);
        whole("RATE_PER_SECOND", &mut limits.rate.per_second);
        whole("CLIENT_BURST", &mut limits.client.burst);
        whole("CLIENT_PER_SECOND", &mut limits.client.per_second);
        whole("ROOM_MESSAGES_PER_SECOND", &mut limits.room.per_second);
        whole("CLIENT_JOINS_PER_10S", &mut limits.client_joins);
        whole("MAX_SOCKETS_PER_IP", &mut limits.max_client_sockets);
        whole("MAX_ROOM_SOCKETS", &mut max_sockets);
        let mut idle_timeout_s = (DEFAULT_IDLE_TIMEOUT_MS / 1000) as u32;
        whole("IDLE_TIMEOUT_S", &mut idle_timeout_s);
        config.idle_timeout_ms = u64::from(idle_timeout_s) * 1000;
        whole("MAX_ROOM_STREAMS", &mut config.max_streams);
        whole("SSE_KEEPALIVE_MS", &mut config.keepalive_ms);
        limits.room.burst = limits.room.per_second;
        limits.max_sockets = max_sockets as usize;
        if limits.max_sockets > RUNTIME_MAX_SOCKETS {
            let why = "above the runtime's 32,768 sockets per object; using 32,768";
            bad.push(BadVar { name: "MAX_ROOM_SOCKETS", value: max_sockets.to_string(), why });
            limits.max_sockets = RUNTIME_MAX_SOCKETS;
        }
        if let Some(value) = var("ROOM_TTL_DAYS") {
            match days_in_ms(value.trim()) {
                Some(ms) => config.idle_ttl_ms = ms,
                None => bad.push(BadVar { name: "ROOM_TTL_DAYS", value, why: "not a number of days from 1 second up; using 30" }),
            }
        }
        config.instance_header = var("ROOM_INSTANCE_HEADER").is_some_and(|v| v.trim() == "1");
        (config, bad)
    }
}

/// A number of days in `TTL_MS`, as whole milliseconds (rounded down), computed exactly from its
/// digits. Written out because `str::parse::<f64>` would bring core's float parser and its tables
/// into the WASM module for this one var (14 KB gzipped). It reads what a float parse reads for a
/// finite number: `[+]digits[.digits][e[+|-]digits]`, digits on at least one side of the point.
fn days_in_ms(text: &str) -> Option<u64> {
    let text = text.strip_prefix('+').unwrap_or(text);
    let (number, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = || whole.bytes().chain(fraction.bytes());
    if whole.len() + fraction.len() == 0 || !digits().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // days = significand × 10^scale, so ms = significand × 864 × 10^(scale + 5). Sixteen significant
    // digits keep that product in a u64; the ones dropped past them weigh under a millisecond.
    let mut significand: u64 = 0;
    let mut scale = i64::from(exponent) - fraction.len() as i64 + 5;
    for digit in digits().skip_while(|&b| b == b'0') {
        if significand < 10u64.pow(15) {
            significand = significand * 10 + u64::from(digit - b'0');
        } else {
            scale += 1;
        }
    }
    let scaled = significand * 864;
    let ms = match scale {
        _ if significand == 0 => 0,
        0.. => 10u64.checked_pow(u32::try_from(scale).ok()?).and_then(|power| scaled.checked_mul(power))?,
        ..-19 => 0,
        _ => {
            let power = 10u64.pow(scale.unsigned_abs() as u32);
            // A remainder past the top of the range puts the exact value above it.
            if scaled % power != 0 && scaled / power == *TTL_MS.end() {
                return None;
            }
            scaled / power
        }
    };
    TTL_MS.contains(&ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_vars() {
        let (config, bad) = RoomConfig::from_vars(|_| None);
        let limits = &config.limits;
        assert_eq!(limits.rate, RateLimit { burst: 20, per_second: 5 });
        assert_eq!(limits.client, RateLimit { burst: 60, per_second: 15 });
        assert_eq!(limits.room, RateLimit { burst: 50, per_second: 50 });
        assert_eq!((limits.client_joins, limits.max_sockets), (10, 1000));
        assert_eq!(config.idle_ttl_ms, 30 * 86_400_000);
        assert_eq!(config.idle_timeout_ms, 75_000);
        assert!(!config.instance_header);
        assert_eq!(limits.edit_window_ms, 900_000);
        assert_eq!((config.max_streams, config.keepalive_ms), (100, 20_000));
        assert!(bad.is_empty());
    }

    #[test]
    fn the_edit_window_is_a_whole_number_of_seconds() {
        let (config, bad) = RoomConfig::from_vars(|name| (name == "EDIT_WINDOW_S").then(|| "2".into()));
        assert_eq!((config.limits.edit_window_ms, bad.len()), (2_000, 0));
        let (config, bad) = RoomConfig::from_vars(|name| (name == "EDIT_WINDOW_S").then(|| "soon".into()));
        assert_eq!((config.limits.edit_window_ms, bad.len()), (900_000, 1));
    }

    #[test]
    fn vars_override_and_bad_ones_are_reported() {
        let (config, bad) = RoomConfig::from_vars(|name| match name {
            "RATE_BURST" => Some(" 1000000 ".into()),
            "RATE_PER_SECOND" => Some("lots".into()),
            "MAX_ROOM_SOCKETS" => Some("0".into()),
            "CLIENT_BURST" => Some("7".into()),
            "CLIENT_PER_SECOND" => Some("8".into()),
            "ROOM_MESSAGES_PER_SECOND" => Some("9".into()),
            "CLIENT_JOINS_PER_10S" => Some("-3".into()),
            "ROOM_TTL_DAYS" => Some("0.0001".into()),
            "ROOM_INSTANCE_HEADER" => Some("1".into()),
            "IDLE_TIMEOUT_S" => Some("3".into()),
            "MAX_ROOM_STREAMS" => Some("2".into()),
            _ => None,
        });
        let limits = &config.limits;
        assert_eq!(limits.rate, RateLimit { burst: 1_000_000, per_second: 5 });
        assert_eq!(limits.client, RateLimit { burst: 7, per_second: 8 });
        assert_eq!(limits.room, RateLimit { burst: 9, per_second: 9 });
        assert_eq!((limits.client_joins, limits.max_sockets), (10, 1000));
        assert_eq!(config.idle_ttl_ms, 8_640);
        assert_eq!(config.idle_timeout_ms, 3_000);
        assert!(config.instance_header);
        assert_eq!(config.max_streams, 2);
        let names: Vec<&str> = bad.iter().map(|b| b.name).collect();
        assert_eq!(names, ["RATE_PER_SECOND", "CLIENT_JOINS_PER_10S", "MAX_ROOM_SOCKETS"]);
    }

    #[test]
    fn room_ttl_must_be_a_sane_number_of_days() {
        for bad in ["0", "-1", "NaN", "inf", "0.00000001", "thirty"] {
            let (config, errors) = RoomConfig::from_vars(|name| (name == "ROOM_TTL_DAYS").then(|| bad.into()));
            assert_eq!(config.idle_ttl_ms, 30 * 86_400_000, "{bad}");
            assert_eq!(errors.len(), 1, "{bad}");
        }
        let (config, _) = RoomConfig::from_vars(|name| (name == "ROOM_TTL_DAYS").then(|| "1.5".into()));
        assert_eq!(config.idle_ttl_ms, 129_600_000);
    }

    #[test]
    fn room_ttl_reads_what_a_float_parse_reads() {
        let ttl = |text: &str| days_in_ms(text);
        for (text, ms) in [("30", 30 * DAY_MS), ("0.00005", 4_320), ("+2", 2 * DAY_MS), (".5", DAY_MS / 2), ("5.", 5 * DAY_MS)] {
            assert_eq!(ttl(text), Some(ms), "{text}");
        }
        for (text, ms) in [("1e1", 10 * DAY_MS), ("25E-1", 5 * DAY_MS / 2), ("0.1e+1", DAY_MS), ("000001.000", DAY_MS)] {
            assert_eq!(ttl(text), Some(ms), "{text}");
        }
        assert_eq!(ttl("0.0000115740740740741"), Some(1_000), "one second, rounded down");
        assert_eq!(ttl("0.000011574074074074"), None, "just under one second");
        assert_eq!(ttl("3650000"), Some(3_650_000 * DAY_MS));
        assert_eq!(ttl(&format!("0.{}1e5", "0".repeat(40))), None, "long digits neither overflow nor count");
        assert_eq!(ttl(&format!("1{}e-40", "9".repeat(45))), Some(17_279_999_999_999), "digits past the 16th are dropped");
        for text in ["3650000.0000001", "1e7", "1e99999999999", "0.0000115", "", ".", "+", "e1", "1e", "1.2.3", "-0.5", "1_0", "0x10", "infinity"] {
            assert_eq!(ttl(text), None, "{text}");
        }
        for text in ["1", "0.25", "7.5", "0.00005", "123.456", "2e-3", "3650000"] {
            let by_float = (text.parse::<f64>().unwrap() * 86_400_000.0).round() as u64;
            assert_eq!(ttl(text), Some(by_float), "{text}");
        }
    }

    #[test]
    fn the_instance_header_is_off_unless_set_to_1() {
        for value in ["0", "true", "", "yes"] {
            let (config, _) = RoomConfig::from_vars(|name| (name == "ROOM_INSTANCE_HEADER").then(|| value.into()));
            assert!(!config.instance_header, "{value}");
        }
    }

    #[test]
    fn room_size_is_capped_at_what_the_runtime_accepts() {
        let (config, bad) = RoomConfig::from_vars(|name| (name == "MAX_ROOM_SOCKETS").then(|| "100000".into()));
        assert_eq!(config.limits.max_sockets, RUNTIME_MAX_SOCKETS);
        assert_eq!(bad.len(), 1);
    }
}
