//! The scenario file: what the fake does before any test drives it (message rules,
//! handshake rules, messages sent on every new connection), and the same rule shapes
//! the admin API mounts at run time. JSON, or YAML for a file named `.yaml` or `.yml`,
//! read with serde: an unknown field or a wrong type is an error that names it, never
//! ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fake_ws_server::{HandshakeRequest, HandshakeRule, Matcher, Response, Rule, Times};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use utoipa::ToSchema;

/// The messages both ways: JSON in text frames.
pub type Json = Value;

/// A scenario file.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Rules that answer the client's messages, on every connection.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Rules that reject some upgrade requests, tried in order.
    #[serde(default)]
    pub handshake_rules: Vec<HandshakeRuleSpec>,
    /// Messages sent to every new connection, in order, as soon as it is accepted:
    /// before anything a rule answers.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub on_connect: Vec<Json>,
    /// Messages that need no expectation: they never count as unlooked-at.
    #[serde(default)]
    pub allow: Vec<MatcherSpec>,
}

/// Which client messages something applies to.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MatcherSpec {
    /// Every message: `"any"`.
    Any,
    /// A message whose JSON includes this (objects: a subset of the keys, recursively;
    /// arrays and scalars: equal): `{"json_includes": {"type": "subscribe"}}`.
    JsonIncludes(Value),
    /// A message equal to this JSON: `{"equals": {"type": "ping"}}`.
    Equals(Value),
}

impl MatcherSpec {
    /// The library's matcher.
    pub fn matcher(&self) -> Matcher<Json> {
        match self {
            MatcherSpec::Any => Matcher::any(),
            MatcherSpec::JsonIncludes(expected) => Matcher::json_includes(expected.clone()),
            MatcherSpec::Equals(expected) => {
                let wanted = expected.clone();
                Matcher::new(format!("a message equal to {expected}"), move |m| {
                    *m == wanted
                })
                .with_expected_json(expected.clone())
            }
        }
    }
}

/// A rule that answers the client's messages.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Which messages it answers.
    #[serde(rename = "match")]
    pub matcher: MatcherSpec,
    /// The messages it sends back, in order. A string `"{{/pointer}}"` anywhere in
    /// them is replaced by the value at that JSON pointer of the client's message
    /// (`"{{/id}}"`: its `id`), or `null` when it has none.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub reply: Vec<Json>,
    /// Answers this many milliseconds after the message came.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// After the replies, closes the connection with this close frame.
    #[serde(default)]
    pub close: Option<CloseSpec>,
    /// How often it must fire: `POST /verify` reports otherwise.
    #[serde(default)]
    pub times: Option<TimesSpec>,
    /// It answers only this many times, then lets the next matching rule answer.
    #[serde(default)]
    pub up_to_n_times: Option<usize>,
    /// 1 answers first; the default is 5.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Its name in failure messages and transcripts.
    #[serde(default)]
    pub name: Option<String>,
}

/// How often a rule must fire: a number (exactly), or `{"at_least": n}`,
/// `{"at_most": n}` or both.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TimesSpec {
    /// Exactly this many times.
    Exactly(usize),
    /// Within bounds, both included.
    Between(Bounds),
}

/// Bounds of a count, both included; at least one of them.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// At least this many.
    #[serde(default)]
    pub at_least: Option<usize>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<usize>,
}

impl TimesSpec {
    /// `Err` when the bounds are empty or reversed (the library panics on those).
    pub fn check(self) -> Result<(), String> {
        match self {
            TimesSpec::Between(Bounds {
                at_least: None,
                at_most: None,
            }) => Err("give at_least, at_most or both".into()),
            TimesSpec::Between(Bounds {
                at_least: Some(low),
                at_most: Some(high),
            }) if low > high => Err(format!("at_least {low} is over at_most {high}")),
            _ => Ok(()),
        }
    }

    /// The library's count; call [`TimesSpec::check`] first.
    pub fn times(self) -> Times {
        match self {
            TimesSpec::Exactly(n) => n.into(),
            TimesSpec::Between(Bounds { at_least, at_most }) => match (at_least, at_most) {
                (Some(low), Some(high)) => (low..=high).into(),
                (Some(low), None) => (low..).into(),
                (None, Some(high)) => (..=high).into(),
                (None, None) => (..).into(),
            },
        }
    }
}

/// A close frame.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseSpec {
    /// The close code: 1000 to 4999.
    pub code: u16,
    /// The close reason.
    #[serde(default)]
    pub reason: String,
}

/// A rule that answers some upgrade requests with an HTTP status instead of 101.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandshakeRuleSpec {
    /// Which requests it answers (all of the conditions given; none: every request).
    #[serde(default)]
    pub when: HandshakeMatch,
    /// The status it answers with (e.g. 401, 503).
    pub status: u16,
    /// Headers of the answer.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body of the answer.
    #[serde(default)]
    pub body: Option<String>,
    /// How many requests it must answer: `POST /verify` reports otherwise.
    #[serde(default)]
    pub times: Option<TimesSpec>,
    /// It answers only this many requests; later ones go on to the next rule.
    #[serde(default)]
    pub up_to_n_times: Option<usize>,
    /// Its name in failure messages.
    #[serde(default)]
    pub name: Option<String>,
}

/// Conditions on an upgrade request; all that are given must hold.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandshakeMatch {
    /// The request's path equals this.
    #[serde(default)]
    pub path: Option<String>,
    /// The query string (without `?`) contains this.
    #[serde(default)]
    pub query_contains: Option<String>,
    /// These headers have these values (names in any case).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request has no header of this name.
    #[serde(default)]
    pub missing_header: Option<String>,
}

/// A scenario or rule that the fake cannot take, said in words.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read the scenario {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a scenario.
    #[error("invalid scenario {path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said: the field, the line and the column.
        error: String,
    },
    /// A value out of its range.
    #[error("invalid scenario {path}: {what}")]
    Invalid {
        /// The file.
        path: String,
        /// Which field, and why.
        what: String,
    },
}

impl Scenario {
    /// Reads and checks the scenario at `path`.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: shown.clone(),
            error,
        })?;
        let parsed = if is_yaml(path) {
            serde_saphyr::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        let scenario: Scenario = parsed.map_err(|error| ScenarioError::Parse {
            path: shown.clone(),
            error,
        })?;
        scenario
            .check()
            .map_err(|what| ScenarioError::Invalid { path: shown, what })?;
        Ok(scenario)
    }

    /// Every rule can be built: `Err` names the first that cannot, and why.
    pub fn check(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check().map_err(|e| format!("rules[{i}]: {e}"))?;
        }
        for (i, rule) in self.handshake_rules.iter().enumerate() {
            rule.check()
                .map_err(|e| format!("handshake_rules[{i}]: {e}"))?;
        }
        Ok(())
    }
}

/// Whether `path` names a YAML file (`.yaml` or `.yml`, in any case).
fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            extension.eq_ignore_ascii_case("yaml") || extension.eq_ignore_ascii_case("yml")
        })
}

impl RuleSpec {
    /// `Err` names the field the library would refuse (it panics on those).
    pub fn check(&self) -> Result<(), String> {
        if self.priority == Some(0) {
            return Err("priority: 1 is the highest, 0 is not a priority".into());
        }
        if let Some(close) = &self.close {
            check_close_code(close.code).map_err(|e| format!("close.code: {e}"))?;
        }
        if let Some(times) = self.times {
            times.check().map_err(|e| format!("times: {e}"))?;
        }
        Ok(())
    }

    /// The library's rule; call [`RuleSpec::check`] first.
    pub fn rule(&self) -> Rule<Json, Json> {
        let replies = self.reply.clone();
        let close = self.close.clone();
        let mut rule = Rule::on(self.matcher.matcher()).reply(move |message: &Json| {
            let mut response =
                Response::new().send_all(replies.iter().map(|reply| fill_in(reply, message)));
            if let Some(close) = &close {
                response = response.close(close.code, close.reason.clone());
            }
            response
        });
        if let Some(ms) = self.delay_ms {
            rule = rule.delay(Duration::from_millis(ms));
        }
        if let Some(times) = self.times {
            rule = rule.times(times.times());
        }
        if let Some(n) = self.up_to_n_times {
            rule = rule.up_to_n_times(n);
        }
        if let Some(priority) = self.priority {
            rule = rule.with_priority(priority);
        }
        if let Some(name) = &self.name {
            rule = rule.named(name.clone());
        }
        rule
    }
}

/// A close code the fake may send: 1000 to 4999.
pub fn check_close_code(code: u16) -> Result<(), String> {
    if (1000..=4999).contains(&code) {
        Ok(())
    } else {
        Err(format!("{code} is not a close code (1000 to 4999)"))
    }
}

/// `reply` with every string `"{{/pointer}}"` replaced by that value of `message`.
fn fill_in(reply: &Json, message: &Json) -> Json {
    match reply {
        Value::String(s) => match s.strip_prefix("{{").and_then(|s| s.strip_suffix("}}")) {
            Some(pointer) if pointer.is_empty() || pointer.starts_with('/') => {
                message.pointer(pointer).cloned().unwrap_or(Value::Null)
            }
            _ => reply.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|i| fill_in(i, message)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), fill_in(v, message)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl HandshakeRuleSpec {
    /// `Err` names the field the library would refuse (it panics on those).
    pub fn check(&self) -> Result<(), String> {
        if !(100..=999).contains(&self.status) {
            return Err(format!("status: {} is not an HTTP status", self.status));
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "headers: {name:?}: {value:?} is not a valid header"
                ));
            }
        }
        if let Some(times) = self.times {
            times.check().map_err(|e| format!("times: {e}"))?;
        }
        Ok(())
    }

    /// The library's handshake rule; call [`HandshakeRuleSpec::check`] first.
    pub fn rule(&self) -> HandshakeRule {
        let when = self.when.clone();
        let mut rule = HandshakeRule::reject(self.status).when(move |r| when.matches(r));
        for (name, value) in &self.headers {
            rule = rule.header(name, value);
        }
        if let Some(body) = &self.body {
            rule = rule.body(body.clone());
        }
        if let Some(times) = self.times {
            rule = rule.times(times.times());
        }
        if let Some(n) = self.up_to_n_times {
            rule = rule.up_to_n_times(n);
        }
        if let Some(name) = &self.name {
            rule = rule.named(name.clone());
        }
        rule
    }
}

impl HandshakeMatch {
    /// Whether `request` meets every condition.
    fn matches(&self, request: &HandshakeRequest) -> bool {
        self.path.as_ref().is_none_or(|p| request.path() == p)
            && self.query_contains.as_ref().is_none_or(|q| {
                request
                    .query()
                    .is_some_and(|query| query.contains(q.as_str()))
            })
            && self
                .headers
                .iter()
                .all(|(name, value)| request.header(name) == Some(value.as_str()))
            && self
                .missing_header
                .as_ref()
                .is_none_or(|name| request.header(name).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_echoes_the_fields_it_points_at() {
        let reply = json!({"type": "pong", "id": "{{/id}}", "of": ["{{/type}}", "{{/none}}"]});
        let message = json!({"type": "ping", "id": 7});
        assert_eq!(
            fill_in(&reply, &message),
            json!({"type": "pong", "id": 7, "of": ["ping", null]})
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let error =
            serde_json::from_value::<Scenario>(json!({"rules": [{"match": "any", "replies": []}]}))
                .unwrap_err()
                .to_string();
        assert!(error.contains("unknown field `replies`"), "{error}");
    }

    #[test]
    fn the_readme_scenario_is_one() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## The scenario file").unwrap()..];
        let start = section.find("```json\n").unwrap() + "```json\n".len();
        let end = start + section[start..].find("```").unwrap();
        let scenario: Scenario = serde_json::from_str(&section[start..end]).unwrap();
        scenario.check().unwrap();
        assert_eq!(
            (scenario.rules.len(), scenario.handshake_rules.len()),
            (3, 1)
        );
    }

    #[test]
    fn times_are_a_count_or_bounds() {
        let rule: RuleSpec =
            serde_json::from_value(json!({"match": "any", "times": {"at_least": 1}})).unwrap();
        assert!(rule.check().is_ok());
        let rule: RuleSpec =
            serde_json::from_value(json!({"match": "any", "times": {"at_least": 3, "at_most": 2}}))
                .unwrap();
        assert_eq!(
            rule.check().unwrap_err(),
            "times: at_least 3 is over at_most 2"
        );
        assert!(
            serde_json::from_value::<RuleSpec>(json!({"match": "any", "times": {"least": 1}}))
                .is_err()
        );
    }

    #[test]
    fn a_priority_of_zero_is_refused_before_the_library_panics() {
        let scenario: Scenario =
            serde_json::from_value(json!({"rules": [{"match": "any", "priority": 0}]})).unwrap();
        assert!(
            scenario
                .check()
                .unwrap_err()
                .starts_with("rules[0]: priority")
        );
    }
}
