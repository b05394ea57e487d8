//! The Worker's vars, read into typed settings. A var that is set but unreadable is an
//! operator's mistake: it is reported and the default is used, so a typo cannot take the
//! chat down.

use crate::chat::rate_limit::RateLimit;

pub const DEFAULT_MAX_ROOM_SOCKETS: usize = 1_000;

/// The runtime accepts at most this many hibernatable sockets per Durable Object, and a
/// refused accept would abort the whole isolate, so `MAX_ROOM_SOCKETS` cannot go higher.
pub const RUNTIME_MAX_SOCKETS: usize = 32_768;

/// After this many `rate_limited` errors in a row a socket is closed with 1008.
pub const FLOOD_STRIKES: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLimits {
    pub rate: RateLimit,
    pub max_sockets: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits { rate: RateLimit::DEFAULT, max_sockets: DEFAULT_MAX_ROOM_SOCKETS }
    }
}

/// A var that could not be read, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVar {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl RoomLimits {
    /// Reads `RATE_BURST`, `RATE_PER_SECOND` and `MAX_ROOM_SOCKETS` through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> (RoomLimits, Vec<BadVar>) {
        let mut limits = RoomLimits::default();
        let mut bad = Vec::new();
        let mut read = |name: &'static str, slot: &mut u64| {
            if let Some(value) = var(name) {
                match value.trim().parse::<u64>() {
                    Ok(n) if n > 0 && n <= u64::from(u32::MAX) => *slot = n,
                    _ => bad.push(BadVar { name, value, why: "not a whole number above 0; using the default" }),
                }
            }
        };
        let (mut burst, mut per_second, mut max_sockets) =
            (u64::from(limits.rate.burst), u64::from(limits.rate.per_second), limits.max_sockets as u64);
        read("RATE_BURST", &mut burst);
        read("RATE_PER_SECOND", &mut per_second);
        read("MAX_ROOM_SOCKETS", &mut max_sockets);
        limits.rate = RateLimit { burst: burst as u32, per_second: per_second as u32 };
        limits.max_sockets = max_sockets as usize;
        if limits.max_sockets > RUNTIME_MAX_SOCKETS {
            let why = "above the runtime's 32,768 sockets per object; using 32,768";
            bad.push(BadVar { name: "MAX_ROOM_SOCKETS", value: max_sockets.to_string(), why });
            limits.max_sockets = RUNTIME_MAX_SOCKETS;
        }
        (limits, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_vars() {
        let (limits, bad) = RoomLimits::from_vars(|_| None);
        assert_eq!(limits, RoomLimits { rate: RateLimit { burst: 20, per_second: 5 }, max_sockets: 1000 });
        assert!(bad.is_empty());
    }

    #[test]
    fn vars_override_and_bad_ones_are_reported() {
        let (limits, bad) = RoomLimits::from_vars(|name| match name {
            "RATE_BURST" => Some(" 1000000 ".into()),
            "RATE_PER_SECOND" => Some("lots".into()),
            "MAX_ROOM_SOCKETS" => Some("0".into()),
            _ => None,
        });
        assert_eq!(limits.rate, RateLimit { burst: 1_000_000, per_second: 5 });
        assert_eq!(limits.max_sockets, 1000);
        assert_eq!(bad.iter().map(|b| b.name).collect::<Vec<_>>(), ["RATE_PER_SECOND", "MAX_ROOM_SOCKETS"]);
    }

    #[test]
    fn room_size_is_capped_at_what_the_runtime_accepts() {
        let (limits, bad) = RoomLimits::from_vars(|name| (name == "MAX_ROOM_SOCKETS").then(|| "100000".into()));
        assert_eq!(limits.max_sockets, RUNTIME_MAX_SOCKETS);
        assert_eq!(bad.len(), 1);
    }
}
