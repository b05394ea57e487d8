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

const DAY_MS: f64 = 86_400_000.0;

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
            idle_ttl_ms: 30 * DAY_MS as u64,
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
            match value.trim().parse::<f64>() {
                // At least a second, at most about 10,000 years: both ends keep the milliseconds exact.
                Ok(days) if (1.0 / 86_400.0..=3_650_000.0).contains(&days) => config.idle_ttl_ms = (days * DAY_MS) as u64,
                _ => bad.push(BadVar { name: "ROOM_TTL_DAYS", value, why: "not a number of days from 1 second up; using 30" }),
            }
        }
        config.instance_header = var("ROOM_INSTANCE_HEADER").is_some_and(|v| v.trim() == "1");
        (config, bad)
    }
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
