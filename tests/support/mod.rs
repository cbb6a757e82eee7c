//! Shared fixtures for the integration tests.

pub mod bot;
pub mod conversation;
pub mod mqtt;
pub mod peers;
pub mod ports;
pub mod profanity;
pub mod raw;
pub mod server;
pub mod world;
