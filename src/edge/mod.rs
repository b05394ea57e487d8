//! The HTTP edge: everything the Worker decides about a request before a room is touched.

pub mod access;
pub mod config;
mod hop;
pub mod origin;
pub mod request_url;
pub mod routes;
pub mod ticket;
