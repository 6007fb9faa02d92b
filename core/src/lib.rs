//! Tickwire matching core.
//!
//! - [`engine::Engine`]: sans-IO matching engine that owns every order book. It takes
//!   [`command::Command`]s and writes [`event::Event`]s to an [`event::EventSink`]; no threads,
//!   clocks, syscalls or allocation on its matching path. Semantics: `docs/matching.md`.
//! - [`ring`]: Disruptor-style lock-free rings (inbound commands, outbound events in shared memory).
//! - [`pipeline`]: the wiring of producers → inbound ring → pinned engine agent → outbound ring.
//! - [`orderfile`]: the CSV order file format shared by tests, tools and benchmarks.
//! - [`config_file`]: the TOML configuration file (`tools/match.example.toml`) → [`EngineConfig`].

#[cfg(not(target_endian = "little"))]
compile_error!("tickwire assumes a little-endian target: records are written as in-memory bytes");

pub mod agent;
pub mod book;
pub mod command;
pub mod config;
pub mod config_file;
pub mod engine;
pub mod event;
pub mod hash;
pub mod orderfile;
#[cfg(not(loom))]
pub mod pipeline;
pub mod ring;
pub mod snapshot;
pub mod types;

pub use command::{Command, CommandKind};
pub use config::{ConfigError, EngineConfig, InstrumentConfig};
pub use engine::Engine;
pub use event::{Event, EventKind, EventSink, EventView};
pub use types::*;
