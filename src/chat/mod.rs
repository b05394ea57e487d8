//! The pure core: what a room is and decides, with no `worker` types and no I/O.

pub mod clients;
pub mod close;
pub mod emoji;
pub mod fields;
pub mod flood;
pub mod held;
pub mod history;
pub mod identity;
pub mod idle;
pub mod marks;
pub mod messages;
pub mod moderation;
pub mod nicknames;
pub mod outbox;
pub mod protocol;
pub mod rate_limit;
pub mod sse;
pub mod room;
pub mod socketio;

#[cfg(test)]
mod properties;
