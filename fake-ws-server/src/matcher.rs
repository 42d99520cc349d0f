//! Matchers: a predicate over a decoded message with a description, so a failed
//! `expect` can say what it waited for.

use std::fmt;
use std::sync::Arc;

/// Matches messages of type `In`.
pub struct Matcher<In> {
    description: String,
    predicate: Arc<dyn Fn(&In) -> bool + Send + Sync>,
    /// What a matching message looks like as JSON, when the matcher knows
    /// (`json_includes`): failure messages diff the closest message against it.
    expected_json: Option<Arc<serde_json::Value>>,
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
            expected_json: None,
        }
    }

    /// The same matcher, saying what a matching message looks like as JSON: a failed
    /// expectation then shows a diff between it and the closest message the client
    /// sent.
    #[must_use]
    pub fn with_expected_json(mut self, expected: serde_json::Value) -> Self {
        self.expected_json = Some(Arc::new(expected));
        self
    }

    /// What a matching message looks like as JSON, if the matcher says.
    pub fn expected_json(&self) -> Option<&serde_json::Value> {
        self.expected_json.as_deref()
    }

    /// Matches every message.
    pub fn any() -> Self {
        Matcher::new("any message", |_| true)
    }

    /// Whether `message` matches.
    pub fn matches(&self, message: &In) -> bool {
        (self.predicate)(message)
    }

    /// What it looks for, as failure messages print it.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl<In> Clone for Matcher<In> {
    fn clone(&self) -> Self {
        Matcher {
            description: self.description.clone(),
            predicate: self.predicate.clone(),
            expected_json: self.expected_json.clone(),
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
