//! Shared test support: the reference model, the `Matcher` trait implemented by both the fast
//! `Engine` and the reference, and small helpers to drive and check them.
#![allow(dead_code)]

pub mod reference;

pub use reference::Reference;

use tickwire_core::engine::{Level, RestingOrder};
use tickwire_core::{Command, EngineConfig, Engine, Event, InstrumentId, Side};

/// What every scenario and property test needs from an engine.
pub trait Matcher {
    /// Human-readable name for failure messages.
    const NAME: &'static str;
    /// Builds one from a configuration (panics if it is invalid).
    fn build(cfg: &EngineConfig) -> Self;
    /// Applies one command, appending its events to `out`.
    fn handle(&mut self, cmd: &Command, out: &mut Vec<Event>);
    /// Resting orders of one side in priority order (empty for an unknown instrument).
    fn book_orders(&self, instrument: InstrumentId, side: Side) -> Vec<RestingOrder>;
    /// Aggregated levels of one side, best first (all of them).
    fn depth(&self, instrument: InstrumentId, side: Side) -> Vec<Level>;
    /// `state_hash()` as docs/matching.md defines it.
    fn state_hash(&self) -> u64;
}

impl Matcher for Engine {
    const NAME: &'static str = "engine";
    fn build(cfg: &EngineConfig) -> Self {
        Engine::new(cfg).expect("valid config")
    }
    fn handle(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        Engine::handle(self, cmd, out)
    }
    fn book_orders(&self, instrument: InstrumentId, side: Side) -> Vec<RestingOrder> {
        let mut v = Vec::new();
        Engine::book_orders(self, instrument, side, &mut v);
        v
    }
    fn depth(&self, instrument: InstrumentId, side: Side) -> Vec<Level> {
        let mut v = Vec::new();
        Engine::depth(self, instrument, side, usize::MAX, &mut v);
        v
    }
    fn state_hash(&self) -> u64 {
        Engine::state_hash(self)
    }
}

impl Matcher for Reference {
    const NAME: &'static str = "reference";
    fn build(cfg: &EngineConfig) -> Self {
        Reference::new(cfg)
    }
    fn handle(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        Reference::handle(self, cmd, out)
    }
    fn book_orders(&self, instrument: InstrumentId, side: Side) -> Vec<RestingOrder> {
        let mut v = Vec::new();
        Reference::book_orders(self, instrument, side, &mut v);
        v
    }
    fn depth(&self, instrument: InstrumentId, side: Side) -> Vec<Level> {
        let mut v = Vec::new();
        Reference::depth(self, instrument, side, usize::MAX, &mut v);
        v
    }
    fn state_hash(&self) -> u64 {
        Reference::state_hash(self)
    }
}

/// Instantiates each generic scenario `fn name<M: Matcher>()` twice: `engine::name` and
/// `reference::name`.
#[macro_export]
macro_rules! for_both_matchers {
    ($($name:ident),* $(,)?) => {
        mod engine {
            $( #[test] fn $name() { super::$name::<tickwire_core::Engine>(); } )*
        }
        mod reference {
            $( #[test] fn $name() { super::$name::<$crate::common::Reference>(); } )*
        }
    };
}

/// One line per event, readable in assertion failures.
pub fn fmt_events(evs: &[Event]) -> String {
    evs.iter().map(|e| format!("  {e:?}\n")).collect()
}
