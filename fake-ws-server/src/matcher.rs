//! Matchers: a predicate over a decoded message with a description, so a failed
//! `expect` can say what it waited for.

use std::fmt;
use std::sync::Arc;

/// Matches messages of type `In`.
pub struct Matcher<In> {
    description: String,
    predicate: Arc<dyn Fn(&In) -> bool + Send + Sync>,
}

impl<In> Matcher<In> {
    /// A matcher from a description and a predicate.
    pub fn new(
        description: impl Into<String>,
        predicate: impl Fn(&In) -> bool + Send + Sync + 'static,
    ) -> Self {
        Matcher {
            description: description.into(),
            predicate: Arc::new(predicate),
        }
    }

    /// Matches every message.
    pub fn any() -> Self {
        Matcher::new("any message", |_| true)
    }

    pub fn matches(&self, message: &In) -> bool {
        (self.predicate)(message)
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

impl<In> Clone for Matcher<In> {
    fn clone(&self) -> Self {
        Matcher {
            description: self.description.clone(),
            predicate: self.predicate.clone(),
        }
    }
}

impl<In> fmt::Debug for Matcher<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl<In> fmt::Display for Matcher<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}
