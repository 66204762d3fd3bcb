//! A small `--name value` argument parser: the CLI is flat and a parser crate would be the
//! largest dependency of the tool.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Flags that take no value.
const SWITCHES: &[&str] = &["no-setup", "no-checks", "help", "draw", "users-by-sql"];

pub struct Args {
    values: BTreeMap<String, Vec<String>>,
    positional: Vec<String>,
}

impl Args {
    pub fn parse(raw: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut positional = Vec::new();
        let mut raw = raw.into_iter();
        while let Some(arg) = raw.next() {
            let Some(name) = arg.strip_prefix("--") else {
                positional.push(arg);
                continue;
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None if SWITCHES.contains(&name) => (name.to_owned(), "true".to_owned()),
                None => {
                    let value = raw.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    (name.to_owned(), value)
                }
            };
            values.entry(name).or_default().push(value);
        }
        Ok(Self { values, positional })
    }

    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    pub fn switch(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// Every value given for a repeatable flag, as given.
    pub fn values_of(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// Every value given for a repeatable flag, comma-separated lists flattened.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => v
                .replace('_', "")
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: not a number: {v}")),
        }
    }

    pub fn number_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.number(name)?.unwrap_or(default))
    }

    /// Names given that the command does not know, so a typo fails loudly.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), String> {
        match self
            .values
            .keys()
            .find(|k| !known.contains(&k.as_str()) && k.as_str() != "help")
        {
            Some(k) => Err(format!("unknown flag --{k}")),
            None => Ok(()),
        }
    }
}
