//! Routing rules: which domain events become which notifications, read from
//! a TOML file such as `config/routes.toml`.
//!
//! ```toml
//! [[route]]
//! events = ["render.job.completed.v1"]   # exact keys or AMQP topic patterns
//! template = "render_completed"
//! channels = ["email", "push"]
//! category = "transactional"             # or "marketing"
//! urgent = false                         # urgent notifications ignore quiet hours
//! expires_after_secs = 86400             # optional: sets `expires_at`
//! [route.constants]                      # fixed values, applied first
//! download_url = "https://app.example.com/renders"
//! [route.variables]                      # JSON pointers into the event's `data`
//! project_name = "/project/name"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use notify_core::ChannelKind;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::RoutesError;

/// Event the stage publishes for every notification it creates.
pub const CREATED_EVENT: &str = "notification.created.v1";
/// Event the dispatcher publishes for a notification it gave up on.
pub const FAILED_EVENT: &str = "notification.failed.v1";

/// Identity events that keep the contacts store current.
pub const USER_REGISTERED: &str = "identity.user.registered.v1";
pub const USER_EMAIL_VERIFIED: &str = "identity.user.email_verified.v1";
pub const USER_BANNED: &str = "identity.user.banned.v1";
pub const TENANT_SUSPENDED: &str = "identity.tenant.suspended.v1";

/// Routing keys the stage binds regardless of the rules.
pub const CONTACT_EVENTS: [&str; 5] = [USER_REGISTERED, USER_EMAIL_VERIFIED, USER_BANNED, TENANT_SUSPENDED, FAILED_EVENT];

/// Maximum length of a template name that the dispatcher accepts, in bytes.
const MAX_TEMPLATE_NAME_LEN: usize = 64;

/// Whether opt-outs of marketing messages apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Messages the user needs for the service to work (receipts, job results).
    Transactional,
    /// Offers and announcements.
    Marketing,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
        }
    }

    pub fn parse(value: &str) -> Option<Category> {
        match value {
            "transactional" => Some(Category::Transactional),
            "marketing" => Some(Category::Marketing),
            _ => None,
        }
    }
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Routing keys or topic patterns (`*` is one word, `#` zero or more).
    pub events: Vec<String>,
    pub template: String,
    pub channels: Vec<ChannelKind>,
    pub category: Category,
    /// Urgent notifications are sent during the user's quiet hours too.
    #[serde(default)]
    pub urgent: bool,
    /// Seconds after the event's time when the notification expires.
    #[serde(default)]
    pub expires_after_secs: Option<u64>,
    /// Template variables with fixed values; a variable also named in
    /// `variables` takes the event's value when the event has one.
    #[serde(default)]
    pub constants: Map<String, Value>,
    /// Template variable name to JSON pointer (RFC 6901) into the event's `data`.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default, rename = "route")]
    routes: Vec<Rule>,
}

/// The checked set of rules.
#[derive(Debug, Clone)]
pub struct Routes {
    rules: Vec<Rule>,
}

impl Routes {
    /// Reads and checks a routes file.
    ///
    /// # Errors
    ///
    /// Returns [`RoutesError`] naming the file and the rule at fault.
    pub fn load(path: &Path) -> Result<Routes, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read { path: path.to_owned(), source })?;
        Routes::parse(&text).map_err(|err| match err {
            RoutesError::Parse { message, .. } => RoutesError::Parse { path: path.display().to_string(), message },
            RoutesError::Invalid { rule, reason, .. } => RoutesError::Invalid { path: path.display().to_string(), rule, reason },
            other => other,
        })
    }

    /// Parses and checks the text of a routes file.
    ///
    /// # Errors
    ///
    /// Returns [`RoutesError`] naming the rule at fault, counted from 1.
    pub fn parse(text: &str) -> Result<Routes, RoutesError> {
        let file: RoutesFile =
            toml::from_str(text).map_err(|err| RoutesError::Parse { path: String::new(), message: err.to_string() })?;
        for (index, rule) in file.routes.iter().enumerate() {
            check_rule(rule).map_err(|reason| RoutesError::Invalid { path: String::new(), rule: index + 1, reason })?;
        }
        Ok(Routes { rules: file.routes })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules whose patterns match `event_type`, in file order.
    pub fn matching<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| rule.events.iter().any(|pattern| topic_matches(pattern, event_type)))
    }

    /// Every binding key the stage's queue needs: the rules' patterns and
    /// [`CONTACT_EVENTS`], without duplicates.
    pub fn binding_keys(&self) -> Vec<String> {
        let mut keys: BTreeSet<String> = CONTACT_EVENTS.iter().map(|key| (*key).to_owned()).collect();
        for rule in &self.rules {
            keys.extend(rule.events.iter().cloned());
        }
        keys.into_iter().collect()
    }
}

fn check_rule(rule: &Rule) -> Result<(), String> {
    if rule.events.is_empty() {
        return Err("`events` must name at least one routing key or pattern".to_owned());
    }
    for pattern in &rule.events {
        check_pattern(pattern)?;
        // A pattern that matches the stage's own output would feed it back in.
        for own in ["notification.created.v1", "notification.delivered.v1", "notification.failed.v1"] {
            if topic_matches(pattern, own) {
                return Err(format!("pattern {pattern:?} matches {own}, which the notification service publishes itself"));
            }
        }
    }
    let template_ok = !rule.template.is_empty()
        && rule.template.len() <= MAX_TEMPLATE_NAME_LEN
        && rule.template.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !template_ok {
        return Err(format!(
            "`template` must be 1 to {MAX_TEMPLATE_NAME_LEN} characters of a-z, 0-9 and _, got {:?}",
            rule.template
        ));
    }
    if rule.channels.is_empty() {
        return Err("`channels` must name at least one channel".to_owned());
    }
    let unique: BTreeSet<ChannelKind> = rule.channels.iter().copied().collect();
    if unique.len() != rule.channels.len() {
        return Err("`channels` names a channel twice".to_owned());
    }
    for (name, pointer) in &rule.variables {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!("variable {name:?}: {pointer:?} is not a JSON pointer; start it with `/`"));
        }
    }
    Ok(())
}

/// Checks a routing key or pattern: dot-separated words, none empty.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let valid = !pattern.is_empty()
        && pattern.len() <= 255
        && pattern.split('.').all(|word| {
            word == "*" || word == "#" || (!word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        });
    if valid {
        Ok(())
    } else {
        Err(format!("{pattern:?} is not a routing key or topic pattern such as `render.job.*.v1`"))
    }
}

/// Matches a routing key against a topic pattern with AMQP topic exchange
/// rules: `*` matches exactly one word and `#` zero or more words.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    match_words(&pattern, &key)
}

fn match_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| match_words(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((&first, key_rest)) => (word == "*" || word == first) && match_words(rest, key_rest),
            None => false,
        },
    }
}

impl Rule {
    /// Builds the template variables for an event: the constants, then the
    /// values the pointers find in `data`. A pointer that finds nothing
    /// leaves the constant of that name, if any, in place.
    pub fn variables_for(&self, data: &Value) -> Map<String, Value> {
        let mut variables = self.constants.clone();
        for (name, pointer) in &self.variables {
            if let Some(value) = data.pointer(pointer).filter(|value| !value.is_null()) {
                variables.insert(name.clone(), value.clone());
            }
        }
        variables
    }

    /// Names of variables the event did not provide and no constant covers.
    pub fn missing_variables(&self, variables: &Map<String, Value>) -> Vec<&str> {
        self.variables
            .keys()
            .filter(|name| !variables.contains_key(name.as_str()))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn topic_star_matches_one_word() {
        assert!(topic_matches("render.job.*.v1", "render.job.completed.v1"));
        assert!(!topic_matches("render.job.*.v1", "render.job.v1"));
        assert!(!topic_matches("render.job.*.v1", "render.job.a.b.v1"));
    }

    #[test]
    fn topic_hash_matches_zero_or_more_words() {
        assert!(topic_matches("render.#", "render"));
        assert!(topic_matches("render.#", "render.job.completed.v1"));
        assert!(topic_matches("#.v1", "file.quota_warning.v1"));
        assert!(topic_matches("render.#.v1", "render.v1"));
        assert!(!topic_matches("render.#", "file.uploaded.v1"));
    }

    #[test]
    fn exact_key_matches_itself_only() {
        assert!(topic_matches("identity.user.registered.v1", "identity.user.registered.v1"));
        assert!(!topic_matches("identity.user.registered.v1", "identity.user.registered.v2"));
    }

    #[test]
    fn pattern_matching_own_events_is_rejected() {
        let text = "[[route]]\nevents = [\"#\"]\ntemplate = \"welcome\"\nchannels = [\"email\"]\ncategory = \"transactional\"\n";
        let err = Routes::parse(text).unwrap_err().to_string();
        assert!(err.contains("notification.created.v1"), "{err}");
    }

    #[test]
    fn unknown_channel_is_rejected() {
        let text = "[[route]]\nevents = [\"a.b.c.v1\"]\ntemplate = \"welcome\"\nchannels = [\"fax\"]\ncategory = \"transactional\"\n";
        assert!(Routes::parse(text).is_err());
    }

    #[test]
    fn bad_pointer_is_rejected_with_rule_number() {
        let text = "[[route]]\nevents = [\"a.b.c.v1\"]\ntemplate = \"welcome\"\nchannels = [\"email\"]\ncategory = \"marketing\"\n\
                    [route.variables]\nuser_name = \"name\"\n";
        let err = Routes::parse(text).unwrap_err().to_string();
        assert!(err.contains("rule 1"), "{err}");
        assert!(err.contains("JSON pointer"), "{err}");
    }

    #[test]
    fn variables_take_event_values_over_constants() {
        let text = "[[route]]\nevents = [\"a.b.c.v1\"]\ntemplate = \"welcome\"\nchannels = [\"email\"]\ncategory = \"transactional\"\n\
                    [route.constants]\nuser_name = \"there\"\nurl = \"https://x.test\"\n[route.variables]\nuser_name = \"/user/name\"\nplan = \"/plan\"\n";
        let routes = Routes::parse(text).unwrap();
        let rule = &routes.rules()[0];

        let with_name = rule.variables_for(&json!({"user": {"name": "Ada"}}));
        assert_eq!(with_name["user_name"], "Ada");
        assert_eq!(with_name["url"], "https://x.test");
        assert_eq!(rule.missing_variables(&with_name), vec!["plan"]);

        let without_name = rule.variables_for(&json!({"plan": "pro"}));
        assert_eq!(without_name["user_name"], "there");
        assert!(rule.missing_variables(&without_name).is_empty());
    }

    #[test]
    fn binding_keys_include_contact_events_once() {
        let text = "[[route]]\nevents = [\"identity.user.registered.v1\", \"render.job.*.v1\"]\ntemplate = \"welcome\"\n\
                    channels = [\"email\"]\ncategory = \"transactional\"\n";
        let keys = Routes::parse(text).unwrap().binding_keys();
        assert_eq!(keys.iter().filter(|key| *key == USER_REGISTERED).count(), 1);
        assert!(keys.contains(&"render.job.*.v1".to_owned()));
        assert!(keys.contains(&FAILED_EVENT.to_owned()));
    }

    #[test]
    fn shipped_routes_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/routes.toml");
        let routes = Routes::load(&path).unwrap();
        assert!(routes.matching("render.job.completed.v1").any(|rule| rule.template == "render_completed"));
        assert!(routes.matching(USER_REGISTERED).any(|rule| rule.template == "welcome"));
        assert_eq!(routes.matching("node.heartbeat.v1").count(), 0);
    }
}
