//! Native state owned by one process.
//!
//! PySpark forks its Python workers from a daemon, so anything with threads (ONNX
//! Runtime sessions, rayon pools) must be built in the process that uses it, not
//! inherited. [`PerProcess`] builds its value on first use and again in any process
//! that did not build it; an inherited value is leaked, since its threads do not
//! exist in the child and dropping it could block forever.

use std::sync::Mutex;

use crate::Result;

pub struct PerProcess<T> {
    slot: Mutex<Option<(u32, T)>>,
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerProcess<T> {
    pub const fn new() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }

    /// A slot already holding `value`, built by this process.
    pub fn with_value(value: T) -> Self {
        Self {
            slot: Mutex::new(Some((std::process::id(), value))),
        }
    }

    /// Run `f` on this process' value. It is (re)built with `build` when there is
    /// none, when another process built it, or when `keep` rejects it (then the old
    /// one, built here, is dropped normally).
    pub fn with<R>(
        &self,
        build: impl FnOnce() -> Result<T>,
        keep: impl FnOnce(&T) -> bool,
        f: impl FnOnce(&mut T) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        match guard.take() {
            Some((owner, value)) if owner != pid => std::mem::forget(value),
            Some((owner, value)) if keep(&value) => *guard = Some((owner, value)),
            _ => {}
        }
        if guard.is_none() {
            *guard = Some((pid, build()?));
        }
        let (_, value) = guard.as_mut().expect("the value was just set");
        f(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_and_rebuilds_when_rejected() {
        let slot = PerProcess::new();
        let mut builds = 0;
        for want in [2, 2, 3, 3] {
            let got = slot
                .with(
                    || {
                        builds += 1;
                        Ok(want)
                    },
                    |v| *v == want,
                    |v| Ok(*v),
                )
                .unwrap();
            assert_eq!(got, want);
        }
        assert_eq!(builds, 2);
    }

    #[test]
    fn a_value_from_another_process_is_replaced() {
        let slot = PerProcess::with_value(1);
        *slot.slot.lock().unwrap() = Some((std::process::id().wrapping_add(1), 1));
        let got = slot.with(|| Ok(7), |_| true, |v| Ok(*v)).unwrap();
        assert_eq!(got, 7);
    }

    #[test]
    fn a_failed_build_leaves_the_slot_empty() {
        let slot: PerProcess<u8> = PerProcess::new();
        let err = slot.with(
            || Err(crate::Error::InvalidArgument("no".into())),
            |_| true,
            |v| Ok(*v),
        );
        assert!(err.is_err());
        assert_eq!(slot.with(|| Ok(5), |_| true, |v| Ok(*v)).unwrap(), 5);
    }
}
