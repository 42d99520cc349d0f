//! The contract from an AsyncAPI 3 document (cargo feature `asyncapi`): every message a
//! client sends is checked against the message schemas of the channel its connection's
//! path is the address of, before the codec sees it. A message that fits none is a
//! contract violation, recorded as a codec failure is: `expect_invalid` takes it, the
//! drop check reports it.
//!
//! Which messages are the client's depends on whose view the document takes. AsyncAPI 3
//! describes one application: its `send` operations are what it sends, its `receive`
//! operations what it receives. A server's document (the usual case, the default here)
//! lists what clients send under `receive`; a client's document (as this repository's
//! `docs/asyncapi.yaml`, written from Orders' side) under `send`:
//! [`AsyncApi::describing_the_client`]. A channel no operation names takes all its
//! messages from either side.
//!
//! `$ref`s are resolved without any network: within the document, and, for
//! [`AsyncApi::from_path`], to files next to it (a relative path, with a JSON pointer
//! after `#`). Schemas are compiled once, at load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use jsonschema::{Registry, Validator};
use serde_json::Value;

/// How many files a document may pull in through `$ref`, itself included.
const MAX_FILES: usize = 64;
/// How deep `$ref`s to `$ref`s may go before the loader calls it a cycle.
const MAX_REF_DEPTH: usize = 32;
/// How many schema errors a violation lists, per message tried.
const MAX_ERRORS: usize = 5;

/// An AsyncAPI 3 document, loaded and compiled, for [`FakeServerBuilder::asyncapi`].
///
/// [`FakeServerBuilder::asyncapi`]: crate::FakeServerBuilder::asyncapi
pub struct AsyncApi {
    channels: Vec<Channel>,
    /// The document describes the client: its `send` operations are the client's.
    describes_client: bool,
}

/// Why a document could not be loaded. Its `Display` says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncApiError(String);

impl fmt::Display for AsyncApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AsyncApiError {}

fn error(message: impl Into<String>) -> AsyncApiError {
    AsyncApiError(message.into())
}

struct Channel {
    name: String,
    /// `None`: an address the document leaves open (`null`), which matches any path.
    address: Option<String>,
    messages: Vec<Message>,
}

struct Message {
    name: String,
    validator: Validator,
    /// The operations' actions that carry it (`send`, `receive`); empty when no
    /// operation names the channel.
    actions: BTreeSet<String>,
}

impl AsyncApi {
    /// Loads a document (YAML or JSON) from a file; `$ref`s to other files resolve
    /// relative to it.
    pub fn from_path(path: impl AsRef<Path>) -> Result<AsyncApi, AsyncApiError> {
        let path = absolute(path.as_ref())?;
        let mut files = Files::default();
        let document = files.load(&path)?;
        Self::compile(&document, &uri_of(&path), files)
    }

    /// Loads a document from a string (YAML or JSON); `$ref`s may only point inside it.
    pub fn from_yaml_str(text: &str) -> Result<AsyncApi, AsyncApiError> {
        let document = parse(text).map_err(|e| error(format!("the document: {e}")))?;
        Self::compile(&document, "file:///asyncapi.yaml", Files::default())
    }

    /// The document describes the client, not the server: the messages of its `send`
    /// operations are what the client sends (the default is the server's view, where
    /// they are under `receive`).
    pub fn describing_the_client(mut self) -> AsyncApi {
        self.describes_client = true;
        self
    }

    /// The channels' names and addresses, as the document has them.
    pub fn channels(&self) -> Vec<(String, Option<String>)> {
        let named = self.channels.iter();
        named.map(|c| (c.name.clone(), c.address.clone())).collect()
    }

    /// `Ok` when a client may send `payload` on a connection to `path`; else why not,
    /// naming the channel, the messages tried and the schema errors.
    pub fn check(&self, path: &str, payload: &str) -> Result<(), String> {
        let Some(channel) = self.channels.iter().find(|c| c.matches(path)) else {
            return Err(format!(
                "no channel of the AsyncAPI document has the address {path:?} (addresses: {})",
                self.addresses()
            ));
        };
        let json: Value = serde_json::from_str(payload)
            .map_err(|e| format!("not JSON, as channel {:?} carries: {e}", channel.name))?;
        let candidates = self.client_messages(channel);
        if candidates.is_empty() {
            return Err(format!(
                "channel {:?} has no message a client sends ({} operations)",
                channel.name,
                self.client_action()
            ));
        }
        let mut tried = Vec::new();
        for message in &candidates {
            match schema_errors(&message.validator, &json) {
                None => return Ok(()),
                Some(errors) => tried.push(format!("{}: {errors}", message.name)),
            }
        }
        Err(format!(
            "fits no message a client sends on channel {:?}: {}",
            channel.name,
            tried.join("; ")
        ))
    }

    fn client_action(&self) -> &'static str {
        if self.describes_client {
            "send"
        } else {
            "receive"
        }
    }

    fn client_messages<'a>(&self, channel: &'a Channel) -> Vec<&'a Message> {
        let action = self.client_action();
        let named = channel.messages.iter().any(|m| !m.actions.is_empty());
        let messages = channel.messages.iter();
        messages
            .filter(|m| !named || m.actions.contains(action))
            .collect()
    }

    fn addresses(&self) -> String {
        let each = self.channels.iter().map(|c| match &c.address {
            Some(address) => format!("{address:?}"),
            None => "any (null)".into(),
        });
        each.collect::<Vec<_>>().join(", ")
    }

    /// Checks the version, then compiles every channel's messages against a registry
    /// holding the document (at `base`) and every file it pulled in.
    fn compile(document: &Value, base: &str, files: Files) -> Result<AsyncApi, AsyncApiError> {
        check_version(document)?;
        let registry = files.registry(document, base)?;
        let actions = operation_actions(document)?;
        let mut channels = Vec::new();
        for (name, channel) in object_at(document, "channels")? {
            let channel = resolve(document, channel)?;
            channels.push(Channel {
                name: name.clone(),
                address: address_of(name, channel)?,
                messages: compile_messages(document, &registry, base, name, channel, &actions)?,
            });
        }
        Ok(AsyncApi {
            channels,
            describes_client: false,
        })
    }
}

impl fmt::Debug for AsyncApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncApi")
            .field("channels", &self.channels())
            .field("describes_client", &self.describes_client)
            .finish()
    }
}

impl Channel {
    /// Whether a connection to `path` (its query aside) is on this channel. `{name}` in
    /// the address stands for one path segment.
    fn matches(&self, path: &str) -> bool {
        let Some(address) = &self.address else {
            return true;
        };
        let path = path.split('?').next().unwrap_or(path);
        let wanted: Vec<&str> = address.split('/').collect();
        let got: Vec<&str> = path.split('/').collect();
        wanted.len() == got.len()
            && wanted
                .iter()
                .zip(&got)
                .all(|(w, g)| (w.starts_with('{') && w.ends_with('}') && !g.is_empty()) || w == g)
    }
}

/// The schema errors of `json`, at most [`MAX_ERRORS`], each with where it is; `None`
/// when it is valid.
fn schema_errors(validator: &Validator, json: &Value) -> Option<String> {
    let mut errors = validator.iter_errors(json).peekable();
    errors.peek()?;
    let shown: Vec<String> = errors
        .by_ref()
        .take(MAX_ERRORS)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".into() } else { at };
            format!("at {at}: {e}")
        })
        .collect();
    let more = errors.count();
    let more = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    Some(format!("{}{more}", shown.join(", ")))
}

fn check_version(document: &Value) -> Result<(), AsyncApiError> {
    match document.get("asyncapi").and_then(Value::as_str) {
        Some(version) if version.starts_with("3.") => Ok(()),
        Some(version) => Err(error(format!(
            "an AsyncAPI {version} document; this fake reads AsyncAPI 3"
        ))),
        None => Err(error(
            "not an AsyncAPI document: no `asyncapi` version field",
        )),
    }
}

/// The object under `key` at the document's top; an absent key is an empty one.
fn object_at<'a>(
    document: &'a Value,
    key: &str,
) -> Result<BTreeMap<&'a String, &'a Value>, AsyncApiError> {
    match document.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map.iter().collect()),
        Some(_) => Err(error(format!("`{key}` is not an object"))),
    }
}

fn address_of(name: &str, channel: &Value) -> Result<Option<String>, AsyncApiError> {
    match channel.get("address") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(address)) => Ok(Some(address.clone())),
        Some(_) => Err(error(format!(
            "channel {name:?}: `address` is not a string"
        ))),
    }
}

/// For each channel (by its pointer, `#/channels/NAME`) and message name in it, the
/// actions of the operations that carry it.
fn operation_actions(
    document: &Value,
) -> Result<BTreeMap<(String, String), BTreeSet<String>>, AsyncApiError> {
    let mut actions: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (name, operation) in object_at(document, "operations")? {
        let operation = resolve(document, operation)?;
        let what = |e: &str| error(format!("operation {name:?}: {e}"));
        let action = operation.get("action").and_then(Value::as_str);
        let action = action.ok_or_else(|| what("no `action`"))?;
        let channel = operation.get("channel").and_then(|c| c.get("$ref"));
        let channel = channel.and_then(Value::as_str);
        let channel = channel.ok_or_else(|| what("no `channel` $ref"))?;
        let channel_name = channel
            .strip_prefix("#/channels/")
            .ok_or_else(|| what("its channel is not under #/channels/"))?;
        let messages =
            message_names(document, operation, channel_name).map_err(|e| what(&e.to_string()))?;
        for message in messages {
            let key = (channel_name.to_owned(), message);
            actions.entry(key).or_default().insert(action.to_owned());
        }
    }
    Ok(actions)
}

/// The names of the messages an operation carries: those it lists (each a `$ref` to
/// `#/channels/CHANNEL/messages/NAME`), or all of its channel's.
fn message_names(
    document: &Value,
    operation: &Value,
    channel: &str,
) -> Result<Vec<String>, AsyncApiError> {
    let prefix = format!("#/channels/{channel}/messages/");
    if let Some(listed) = operation.get("messages").and_then(Value::as_array) {
        let names = listed.iter().map(|m| {
            let reference = m.get("$ref").and_then(Value::as_str).unwrap_or("");
            reference
                .strip_prefix(&prefix)
                .map(unescape)
                .ok_or_else(|| error(format!("a message that is not a $ref under {prefix}")))
        });
        return names.collect();
    }
    let pointer = format!("/channels/{}/messages", escape(channel));
    let messages = document.pointer(&pointer).and_then(Value::as_object);
    Ok(messages
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

/// Compiles each message of channel `name` (its payload schema, through the registry so
/// that its `$ref`s resolve) with the actions the operations give it.
fn compile_messages(
    document: &Value,
    registry: &Registry<'_>,
    base: &str,
    name: &str,
    channel: &Value,
    actions: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Result<Vec<Message>, AsyncApiError> {
    let Some(messages) = channel.get("messages").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut compiled = Vec::new();
    for (message_name, message) in messages {
        let what = |e: String| error(format!("channel {name:?}, message {message_name:?}: {e}"));
        let pointer = payload_pointer(document, message).map_err(|e| what(e.to_string()))?;
        let schema = serde_json::json!({ "$ref": format!("{base}#{pointer}") });
        let validator = jsonschema::options()
            .with_registry(registry)
            .offline()
            .build(&schema)
            .map_err(|e| what(format!("its payload schema does not compile: {e}")))?;
        let key = (name.to_owned(), message_name.clone());
        compiled.push(Message {
            name: message_name.clone(),
            validator,
            actions: actions.get(&key).cloned().unwrap_or_default(),
        });
    }
    Ok(compiled)
}

/// The JSON pointer, in the document, of a message's payload schema: following the
/// message's own `$ref`s, and into `schema` for a multi-format payload.
fn payload_pointer(document: &Value, message: &Value) -> Result<String, AsyncApiError> {
    let (message, pointer) = follow(document, message)?;
    let pointer = pointer.ok_or_else(|| error("define messages under components and $ref them"))?;
    match message.get("payload") {
        None => Err(error("no `payload`")),
        Some(payload) if payload.get("schemaFormat").is_some() => {
            let format = payload["schemaFormat"].as_str().unwrap_or("");
            if format.contains("json") || format.contains("asyncapi") {
                Ok(format!("{pointer}/payload/schema"))
            } else {
                Err(error(format!(
                    "payload schema format {format:?}: only JSON Schema is read"
                )))
            }
        }
        Some(_) => Ok(format!("{pointer}/payload")),
    }
}

/// Follows `$ref`s within the document from `value`, up to [`MAX_REF_DEPTH`].
fn resolve<'a>(document: &'a Value, value: &'a Value) -> Result<&'a Value, AsyncApiError> {
    follow(document, value).map(|(value, _)| value)
}

/// Follows `$ref`s within the document from `value`, up to [`MAX_REF_DEPTH`]: where
/// they lead, and the JSON pointer of the last one followed (`None`: `value` had none).
fn follow<'a>(
    document: &'a Value,
    mut value: &'a Value,
) -> Result<(&'a Value, Option<&'a str>), AsyncApiError> {
    let mut pointer = None;
    for _ in 0..MAX_REF_DEPTH {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok((value, pointer));
        };
        let inner = reference
            .strip_prefix('#')
            .ok_or_else(|| error(format!("a $ref outside the document: {reference}")))?;
        value = document
            .pointer(inner)
            .ok_or_else(|| error(format!("$ref {reference} points at nothing")))?;
        pointer = Some(inner);
    }
    Err(error(format!(
        "$refs deeper than {MAX_REF_DEPTH}: a cycle?"
    )))
}

/// A JSON pointer segment's escapes undone (`~1` is `/`, `~0` is `~`).
fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// YAML (JSON is YAML) into JSON values.
fn parse(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// The files a document pulled in through `$ref`, by their `file://` URI.
#[derive(Default)]
struct Files {
    loaded: BTreeMap<String, Value>,
}

impl Files {
    /// Reads and parses `path`, then every file its `$ref`s name, transitively.
    fn load(&mut self, path: &Path) -> Result<Value, AsyncApiError> {
        let document = self.read(path)?;
        let mut pending = vec![(path.to_path_buf(), document.clone())];
        while let Some((from, value)) = pending.pop() {
            for file in referenced_files(&value) {
                let target = normalize(&from.parent().unwrap_or(Path::new("/")).join(file));
                if self.loaded.contains_key(&uri_of(&target)) {
                    continue;
                }
                if self.loaded.len() >= MAX_FILES {
                    return Err(error(format!("more than {MAX_FILES} files through $ref")));
                }
                let value = self.read(&target)?;
                pending.push((target, value));
            }
        }
        Ok(document)
    }

    fn read(&mut self, path: &Path) -> Result<Value, AsyncApiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let value = parse(&text).map_err(|e| error(format!("{}: {e}", path.display())))?;
        self.loaded.insert(uri_of(path), value.clone());
        Ok(value)
    }

    /// A registry of every loaded file, and the document at `base`.
    fn registry(self, document: &Value, base: &str) -> Result<Registry<'static>, AsyncApiError> {
        let mut resources = self.loaded;
        resources.insert(base.to_owned(), document.clone());
        let mut registry = Registry::new();
        for (uri, value) in resources {
            registry = registry
                .add(uri.as_str(), value)
                .map_err(|e| error(format!("{uri}: {e}")))?;
        }
        registry
            .prepare()
            .map_err(|e| error(format!("resolving the $refs: {e}")))
    }
}

/// The file part of every `$ref` in `value` that points outside it (`a.json#/x` →
/// `a.json`). A remote one (`https://…`) is left to fail at compile: no network here.
fn referenced_files(value: &Value) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let file = reference.split('#').next().unwrap_or("");
                    if !file.is_empty() && !file.contains("://") {
                        files.insert(file.to_owned());
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    files
}

fn absolute(path: &Path) -> Result<PathBuf, AsyncApiError> {
    std::path::absolute(path)
        .map(|p| normalize(&p))
        .map_err(|e| error(format!("{}: {e}", path.display())))
}

/// `.` and `..` taken out, as a URI reference's resolution does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn uri_of(path: &Path) -> String {
    format!("file://{}", path.display())
}
