//! A child process killed and reaped when the test ends, however it ends (a panic included).
//! Shared by test crates (`#[path]`-included by feed/tests/feed_binary.rs,
//! feed/tests/python_subscriber.rs and tools/tests/sub_cli.rs).
// Each including test uses only some of the methods.
#![allow(dead_code)]

use std::process::{Child, Output};

/// Owns a running child until [`Reap::wait_with_output`] takes it; kills it on drop otherwise.
pub struct Reap(Option<Child>);

impl Reap {
    pub fn new(c: Child) -> Reap {
        Reap(Some(c))
    }

    /// The child, still running or not.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("taken only by wait_with_output")
    }

    /// Waits for its exit and collects its output (`Child::wait_with_output`).
    pub fn wait_with_output(mut self) -> Output {
        self.0.take().expect("present until here").wait_with_output().unwrap()
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
