//! Cairn's client: CLI, local state, scanner, planner, and the push/pull executors.

pub mod chunker;
pub mod cli;
pub mod config;
pub mod error;
pub mod planner;
pub mod state;
pub mod tree;

pub use error::{Error, Result};
pub mod account;
pub mod cache;
pub mod casefold;
pub mod commands;
pub mod delta;
pub mod download;
pub mod events;
pub mod faults;
pub mod guard;
pub mod heal;
pub mod history;
pub mod ignore_rules;
pub mod live;
pub mod localfs;
pub mod mapped;
pub mod portability;
pub mod reconcile;
pub mod remote;
pub mod resume;
pub mod scanner;
pub mod status;
pub mod sync;
pub mod upload;
pub mod watch;
