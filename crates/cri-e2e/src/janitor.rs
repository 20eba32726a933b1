//! Cleanup that happens whatever way the suite ends: normally, on an error, on a panic
//! or on SIGINT/SIGTERM.
//!
//! Every resource registers an idempotent cleanup action here and keeps a [`Guard`];
//! dropping the guard runs (and forgets) the action. [`run_all`] runs every action still
//! registered, newest first; the signal thread calls it before exiting.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

type Action = Box<dyn FnOnce() + Send>;

static ACTIONS: Mutex<Vec<(u64, String, Action)>> = Mutex::new(Vec::new());
static NEXT_ID: Mutex<u64> = Mutex::new(0);
/// Set once a signal arrived: what is registered from then on is cleaned up at once.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn actions() -> std::sync::MutexGuard<'static, Vec<(u64, String, Action)>> {
    ACTIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the registered action when dropped (unless [`run_all`] already did).
#[must_use = "dropping the guard runs the cleanup at once"]
pub struct Guard(u64);

/// Registers `action`, described by `what` (printed if it panics).
pub fn defer(what: impl Into<String>, action: impl FnOnce() + Send + 'static) -> Guard {
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        // The main thread raced the signal: undo what it just made.
        run_one(&what.into(), Box::new(action));
        return Guard(0);
    }
    let id = {
        let mut next = NEXT_ID.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *next += 1;
        *next
    };
    actions().push((id, what.into(), Box::new(action)));
    Guard(id)
}

impl Drop for Guard {
    fn drop(&mut self) {
        let taken = {
            let mut list = actions();
            list.iter().position(|(id, ..)| *id == self.0).map(|i| list.remove(i))
        };
        if let Some((_, what, action)) = taken {
            run_one(&what, action);
        }
    }
}

fn run_one(what: &str, action: Action) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)).is_err() {
        eprintln!("cri-e2e: cleanup of {what} panicked");
    }
}

/// Runs every registered action, newest first.
pub fn run_all() {
    loop {
        let Some((_, what, action)) = actions().pop() else { return };
        run_one(&what, action);
    }
}

/// On SIGINT or SIGTERM: clean up everything, then exit with 130.
pub fn clean_up_on_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Registered here, before returning, so no signal is missed after this point.
    let (mut terminate, mut interrupt) = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
    })?;
    std::thread::Builder::new().name("cri-e2e-signals".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        });
        eprintln!("cri-e2e: interrupted; cleaning up");
        SHUTTING_DOWN.store(true, Ordering::SeqCst);
        run_all();
        std::process::exit(130);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn guards_run_once_and_run_all_runs_the_rest_newest_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let push = |n: usize| {
            let log = Arc::clone(&log);
            move || log.lock().unwrap().push(n)
        };
        let first = defer("one", push(1));
        let _second = defer("two", push(2));
        let third = defer("three", push(3));
        drop(third);
        run_all();
        drop(first);
        assert_eq!(*log.lock().unwrap(), [3, 2, 1]);
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let guard = defer("panics", move || {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("boom");
        });
        drop(guard);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
