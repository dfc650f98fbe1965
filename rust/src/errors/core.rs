//! The errors of the Rust cores (`pool::core`, `semaphore::core`): plain Rust, no PyO3, so the
//! cores build and test without an interpreter. The binding maps them onto the exception tree
//! in one place, `From<CoreError> for PyErr` in [`crate::errors`].

/// Every failure a core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// Acquire on a closed pool (`PoolClosedError`).
    PoolClosed,
    /// A construction argument out of range (`ValueError`).
    Config {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    /// More releases than acquires of a semaphore of `permits` permits (`ValueError`).
    OverReleased { permits: usize },
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreError::PoolClosed => f.write_str("the pool is closed"),
            CoreError::Config { field, value, why } => write!(f, "{field}={value}: {why}"),
            CoreError::OverReleased { permits } => write!(
                f,
                "Semaphore.release(): released more often than acquired (all {permits} permits \
                 are already free)"
            ),
        }
    }
}

impl std::error::Error for CoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_value() {
        let e = CoreError::Config {
            field: "permits",
            value: "0".into(),
            why: "must be >= 1",
        };
        assert_eq!(e.to_string(), "permits=0: must be >= 1");
        assert_eq!(CoreError::PoolClosed.to_string(), "the pool is closed");
        let e = CoreError::OverReleased { permits: 3 }.to_string();
        assert!(e.contains("all 3 permits"), "{e}");
    }
}
