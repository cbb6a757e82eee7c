#![allow(unused_imports)]
//! The helpers' earlier names and places, kept so that suites not yet moved to the new ones
//! still compile: [`Bot`] is [`BinaryProcess`] (a child process, not necessarily a bot). New code
//! imports from [`super::process`], [`super::chat`], [`super::mqtt`] and [`super::files`].

pub use super::chat::{body, ChatClient};
pub use super::files::password_file;
pub use super::mqtt::publish;
pub use super::process::BinaryProcess;
pub use super::process::BinaryProcess as Bot;
