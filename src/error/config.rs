//! [`ConfigErrors`]: every problem of a refused configuration, each with its key.

use std::fmt;

use super::{Error, Result};

/// One problem found in a configuration, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, such as `redis.cache.pool_size`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    /// The problems, in the order they were found.
    pub fn issues(&self) -> &[ConfigIssue] {
        &self.issues
    }

    /// True when some problem names exactly this key.
    pub fn has_key(&self, key: &str) -> bool {
        self.issues.iter().any(|i| i.key == key)
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    /// `Ok(())` when nothing was found, the whole list as [`Error::InvalidConfig`] otherwise.
    pub(crate) fn into_result(self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(self))
        }
    }
}

/// One problem: on the same line. Several: one a line, indented, so a service that prints
/// the error (`eprintln!("{e}")`) shows a list a person reads at once.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.issues.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems", all.len())?;
                for issue in all {
                    write!(f, "\n  {issue}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}
