//! Panics in third-party decoders become errors, quietly.
//!
//! The `image` crate's decoders (and the `tiff`, `png`, `gif`, `image-webp` crates
//! under it) occasionally panic on hostile input instead of returning an error. A
//! panic must never take a batch, a rayon pool or a Spark task down with it, so the
//! per-image work runs under [`catch`], which turns a panic into its message.
//!
//! Rust prints every panic through the process-wide panic hook before unwinding. For a
//! failure that is reported as a row's error that print is noise, so the first use of
//! [`catch`] installs a hook that stays silent while the panicking thread is inside
//! [`catch`] (it records the location for the error instead) and otherwise hands over
//! to the hook that was there before (Rust's default, or the embedding program's).
//!
//! This needs panics to unwind: the crate must not be built with `panic = "abort"`
//! (the Cargo profiles do not set it; a unit test checks it).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch`] calls are active on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last quiet panic on this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|l| *l.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string())
}

/// Run `f`; a panic inside it is caught without printing anything and returned as
/// its message (with the source location when known).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    outcome.map_err(|payload| {
        let message = payload_message(payload.as_ref());
        match LOCATION.with(|l| l.borrow_mut().take()) {
            Some(at) => format!("{message} (at {at})"),
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fruitlens must be built with `panic = "unwind"`: decoder panics are caught.
    #[cfg(not(panic = "unwind"))]
    compile_error!("the tests need panic = \"unwind\"");

    #[test]
    fn panics_unwind_in_every_profile() {
        let manifest = include_str!("../Cargo.toml");
        assert!(
            !manifest.replace(' ', "").contains("panic=\"abort\""),
            "a Cargo profile sets panic = \"abort\": decoder panics would abort the process"
        );
    }

    #[test]
    fn a_panic_becomes_its_message_and_the_thread_carries_on() {
        let err = catch(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        assert!(err.starts_with("boom 7 (at "), "{err}");
        assert!(err.contains("guard.rs"), "{err}");
        let err = catch(|| -> u8 { panic!("static") }).unwrap_err();
        assert!(err.starts_with("static"), "{err}");
        assert_eq!(catch(|| 5), Ok(5));
        // Nested: the inner panic is caught by the inner guard.
        let outer = catch(|| catch(|| -> u8 { panic!("inner") }).unwrap_err());
        assert!(outer.unwrap().starts_with("inner"));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }

    #[test]
    fn panics_outside_the_guard_still_reach_the_previous_hook() {
        install_hook();
        // Outside `catch` the hook delegates (the default hook prints; it must not
        // record a location for a later quiet panic).
        let r = std::thread::spawn(|| panic!("loud")).join();
        assert!(r.is_err());
        assert!(LOCATION.with(|l| l.borrow().is_none()));
    }
}
