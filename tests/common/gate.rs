//! One test binary runs its tests two at a time, but a few tests must have
//! the machine to themselves: the fault suite measures timeouts and memory,
//! the package test builds and boots a whole system, the fuzz run keeps
//! both cores busy. Those take the gate [`exclusive`]ly; every server a
//! test starts holds it [`shared`] while it runs.
//!
//! Shared holders never wait for a waiting exclusive one (a test may start
//! a second server while holding the first), so exclusive tests simply run
//! once the ordinary ones are done; since every test eventually finishes,
//! they always get their turn.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    shared: usize,
    exclusive: bool,
}

struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new(State {
        shared: 0,
        exclusive: false,
    }),
    changed: Condvar::new(),
};

fn lock() -> MutexGuard<'static, State> {
    // A test that panicked while holding the lock left a consistent count.
    GATE.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wait(guard: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
    GATE.changed
        .wait(guard)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held while a server runs; released on drop.
pub struct Shared(());

/// Held while a test needs the machine to itself; released on drop.
pub struct Exclusive(());

/// Waits until no exclusive test runs, then holds the gate shared.
pub fn shared() -> Shared {
    let mut state = lock();
    while state.exclusive {
        state = wait(state);
    }
    state.shared += 1;
    Shared(())
}

/// Waits until nothing else holds the gate, then holds it alone.
pub fn exclusive() -> Exclusive {
    let mut state = lock();
    while state.exclusive || state.shared > 0 {
        state = wait(state);
    }
    state.exclusive = true;
    Exclusive(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        lock().shared -= 1;
        GATE.changed.notify_all();
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        lock().exclusive = false;
        GATE.changed.notify_all();
    }
}
